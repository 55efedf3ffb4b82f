"""Choosing one name for an entity from an unordered list of its names.

X-FACTR's alias-<lang>.txt lists every known name of an entity, sorted, not canonical-first, and for
Chinese mixes traditional and simplified script (Q142 France: 法兰西 法兰西共和国 法国). choose_name():

1. drops names with symbols or emoji (anything but letters, digits, CJK ideographs, spaces and
   . - ' & ·), e.g. "🇵🇱" or "雪梨 (澳洲)"; for Chinese, converts every name to simplified script;
2. prefers names with CJK ideographs (Chinese) and drops one-character names and all-capital
   abbreviations (e.g. 中, USA) when there are others;
3. drops elaborated forms that contain another candidate (印度共和国 ⊃ 印度, 日本国 ⊃ 日本,
   中国香港 ⊃ 香港, United States of America ⊃ United States);
4. ranks the rest: most source names mapping to it (美国, 美國 -> 美国 counts 2), then the core of
   most other names (拿破仑 is in 拿破仑·波拿巴 and 拿破仑一世, so it beats the nickname 小拿拿; official
   state forms such as 法兰西共和国 or 尼德兰王国 do not count), then names already written that way in
   the source (already simplified), then shorter, then by code point.

This is a heuristic: frequent entities deserve a curated override (see scripts/build_en_zh.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .common import to_simplified

NAME_PUNCT = set(" .-'’&·・•‧")
STATE_FORMS = ("共和国", "王国", "联邦", "帝国", "合众国", "公国", "Republic", "Kingdom", "Federation", "Empire")


def is_ideograph(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3FFFF


def usable(name: str) -> bool:
    """Letters, digits, CJK ideographs and a little name punctuation only (no symbols, no emoji)."""
    ok = all(c.isalnum() or is_ideograph(c) or c in NAME_PUNCT for c in name)
    return ok and any(c.isalpha() or is_ideograph(c) for c in name)


def has_ideograph(name: str) -> bool:
    return any(is_ideograph(c) for c in name)


def is_abbreviation(name: str) -> bool:
    letters = [c for c in name if c.isalpha()]
    return len(letters) <= 5 and all(c.isascii() and c.isupper() for c in letters)


@dataclass(frozen=True)
class Naming:
    name: str
    others: tuple[str, ...]     # the other usable names, raw and converted, sorted
    dropped: tuple[str, ...]    # names with symbols or emoji


def choose_name(names: Iterable[str], chinese: bool = False) -> Naming | None:
    """One name from an unordered list (see the module docstring), or None if none is usable."""
    raw = [n.strip() for n in names if n.strip()]
    good = [n for n in raw if usable(n)]
    dropped = tuple(n for n in raw if not usable(n))
    support: dict[str, int] = {}
    as_is: set[str] = set()
    for n in good:
        form = to_simplified(n) if chinese else n
        support[form] = support.get(form, 0) + 1
        if form == n:
            as_is.add(form)
    cands = list(support)
    if not cands:
        return None
    for keep in ((lambda c: has_ideograph(c)) if chinese else None,
                 lambda c: len(c) > 1 and not is_abbreviation(c)):
        if keep is not None and any(keep(c) for c in cands):
            cands = [c for c in cands if keep(c)]
    inside = {c: sum(1 for d in cands if d != c and c in d and not d.endswith(STATE_FORMS)) for c in cands}
    core = [c for c in cands if not any(d != c and len(d) > 1 and d in c for d in cands)]
    cands = core or cands
    name = min(cands, key=lambda c: (-support[c], -inside[c], c not in as_is, len(c), c))
    others = sorted((set(good) | set(support)) - {name})
    return Naming(name, tuple(others), dropped)
