"""Which facts a model knows: the one rule every command applies before it asks a model about facts.

    rule_of(handle)             -> "trained" | "rank" | "all": the rule a model is judged by
    known_facts(handle, facts)  -> the facts of ``facts`` the model knows, in their order (``rule=``: another rule)
    known_table(h, facts, k=10) -> one ``Knowledge(id, lang, relation, rank, p, known)`` per fact (the rank rule)
    known_report(h, facts)      -> those records and their ``summary`` as JSON (`kneuron facts known`, known.json)
    trained_on(handle)          -> (fact ids, languages) of a model organism, None for another model
    facts_for(handle, "en-zh", langs=("en", "zh"), limit=10)  -> a command's facts: languages, known, first ids

The rules. A model's card names its rule (``kneuron.models.registry.ModelCard.known``); a model without a
card is "trained" when its directory holds an organism's files, else "all"; a caller may ask for any rule
with ``rule=`` (`kneuron facts known` asks for "rank" on any model).

* "trained" -- a model organism (a bundled one, or a directory holding ``facts.txt`` and ``training.json``)
  knows the facts it was trained on (ids in ``facts.txt``, languages of ``training.json``), nothing else.
* "rank" -- a pretrained model knows a fact (one id in one language) when the FIRST token of the gold
  object ranks within the top K (``K`` = 10) of the model's prediction at the answer position of the
  fact's first query (``Fact.first_query``: causal, the next token after the prompt; masked, the first
  mask of the answer). Rank 1 is the model's top choice; rank = 1 + the number of tokens whose logit is
  strictly higher (a tie counts for the gold token); p is that token's probability there. A fact the
  model cannot be asked (no template it can use, an answer its tokenizer cannot spell, a prompt longer
  than its context) is not known (rank None). The rule needs the model itself: a name alone is refused
  (ConfigError) rather than loaded behind the caller's back. Ranks are kept per model weights in the
  content cache (``kneuron.store.cache``, ``known/<weights fingerprint>``, one entry per query's text),
  so reproduce, the bench and the explorer probe a model's facts once.
* "all" -- any other model (smollm2): no rule, every fact counts as known.

Where it is used: the paper localises with the gold answer even where the model is wrong, so reproduce and
`kneuron likn` keep every fact (``paper_rule``: an organism's trained facts, else all) and reproduce writes
each fact's record beside its results (known.json, for a model whose rule is "rank"); the editing bench,
`kneuron edit` and the explorer edit and list the known facts only (``known_facts``).
"""
from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch

from kneuron.errors import ConfigError
from kneuron.facts import Fact, load_facts
from kneuron.facts.schema import relation_key
from kneuron.facts.templates import QueryError
from kneuron.models.fingerprint import weights_fingerprint
from kneuron.models.hooks import forward, pad
from kneuron.models.load import ModelHandle
from kneuron.models.registry import ORGANISMS_DIR, find_card
from kneuron.models.targets import check_context, encode
from kneuron.report.progress import progress
from kneuron.store.cache import Cache, safe_name

RULES = ("trained", "rank", "all")
K = 10                  # the rank rule's K: the gold answer's first token within the model's top 10
BATCH = 32              # prompts per forward pass of the rank rule


@dataclass(frozen=True)
class Knowledge:
    """Whether a model knows one fact (id, language) by the rank rule, and the numbers it was decided by:
    ``rank`` of the gold object's first token (1 = top; None: the model cannot be asked) and its
    probability ``p`` at the answer position."""
    id: str
    lang: str
    relation: str
    rank: int | None
    p: float | None
    known: bool

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Knowledge":
        return cls(**{k: d[k] for k in ("id", "lang", "relation", "rank", "p", "known")})


def _name(handle: ModelHandle | str) -> str:
    return handle if isinstance(handle, str) else handle.name


def _folder(name: str) -> Path | None:
    """Where an organism's facts.txt would be: a bundled organism's folder, or the model's own directory."""
    card = find_card(name)
    if card is not None:
        return ORGANISMS_DIR / name if card.known == "trained" else None
    return Path(name)


def trained_on(handle: ModelHandle | str) -> tuple[set[str], set[str]] | None:
    """The fact ids (its ``facts.txt``) and languages (``training.json``'s ``n_facts``; empty: it names
    none, so every language) a model organism was trained on, for a loaded model, a bundled name or a
    directory; None for a model that is not an organism (or whose files are not there)."""
    d = _folder(_name(handle))
    try:
        if d is None or not ((d / "facts.txt").is_file() and (d / "training.json").is_file()):
            return None
    except OSError:                      # a name that is no valid path (a hub id with odd characters)
        return None
    ids = set((d / "facts.txt").read_text(encoding="utf-8").split())
    langs = set(json.loads((d / "training.json").read_text(encoding="utf-8")).get("n_facts") or ())
    return ids, langs


def rule_of(handle: ModelHandle | str) -> str:
    """The rule a model's facts are judged by: its card's ``known``; without a card, "trained" for an
    organism's directory, else "all"."""
    card = find_card(_name(handle))
    if card is not None:
        return card.known
    return "trained" if trained_on(handle) is not None else "all"


def paper_rule(handle: ModelHandle | str) -> str:
    """The rule the paper's commands (reproduce, likn) select facts by: the paper localises with the gold
    answer even where the model is wrong, so every fact ("all"), except that an organism is asked only
    about the facts it was trained on ("trained": it has never seen the others)."""
    return "trained" if rule_of(handle) == "trained" else "all"


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ConfigError(f"unknown knowledge rule {rule!r} (expected one of {', '.join(RULES)})")
    return rule


# ----------------------------------------------------------------------------- the rank rule

def _query_key(prompt: str, target: str) -> str:
    """A cache key of one query's content (the rank depends on the prompt and the answer only)."""
    return hashlib.sha1(json.dumps([prompt, target], ensure_ascii=False).encode("utf-8")).hexdigest()[:20]


def _ask(h: ModelHandle, f: Fact) -> tuple[str, list[int], int, int] | None:
    """(cache key, model input, answer position, gold first token) of a fact's first query; None when the
    model cannot be asked."""
    try:
        q = f.first_query(h.kind)
        enc = encode(h.tokenizer, h.kind, q.prompt, q.target)
        check_context(enc, h.max_positions)
    except QueryError:
        return None
    pos = enc.positions[0]
    ids = enc.input_ids[:pos + 1] if h.kind == "causal" else enc.input_ids    # causal: the prefix suffices
    return _query_key(q.prompt, q.target), list(ids), pos, enc.target_ids[0]


@torch.no_grad()
def _rank_batch(h: ModelHandle, asks: list[tuple[str, list[int], int, int]]) -> list[tuple[int, float]]:
    """(rank, p) of each query's gold token, in one forward pass (the output layer on the answer cells alone;
    only the gold token's logit and its rank are kept, never a distribution)."""
    batch = pad(h, [a[1] for a in asks])
    rows = torch.arange(len(asks), device=batch.ids.device)
    cols = torch.tensor([a[2] for a in asks], device=batch.ids.device)
    logits = forward(h, batch, logits_at=(rows, cols)).logits.float()            # [N, V]
    gold = logits[rows, torch.tensor([a[3] for a in asks], device=logits.device)]
    rank = (logits > gold[:, None]).sum(-1) + 1
    p = (gold - torch.logsumexp(logits, -1)).exp()
    return [(int(r), float(q)) for r, q in zip(rank.tolist(), p.tolist())]


def _cache() -> Cache:
    return Cache("known", load=lambda f: json.loads(f.read().decode("utf-8")),
                 dump=lambda v, f: f.write(json.dumps(v, ensure_ascii=False).encode("utf-8")),
                 what="known-facts ranks")


def _entry_ok(fp: str):
    def ok(v) -> bool:
        ranks = v.get("ranks") if isinstance(v, dict) else None
        return (isinstance(ranks, dict) and v.get("rule") == "rank" and v.get("fingerprint") == fp
                and all(isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and r[0] >= 1
                        and isinstance(r[1], (int, float)) and 0 <= r[1] <= 1 for r in ranks.values()))
    return ok


def _ranks(h: ModelHandle, asks: dict[str, tuple], show: bool) -> dict[str, tuple[int, float]]:
    """key -> (rank, p) for the queries ``asks`` (key -> _ask's tuple): read from the cache, the missing
    ones computed (shortest first, ``BATCH`` at a time) and added to it."""
    fp = weights_fingerprint(h.model)
    cache, name = _cache(), f"rank-{fp}-{h.kind}-{safe_name(h.name, 40)}.json"
    entry = cache.get(name, check=_entry_ok(fp)) or {"rule": "rank", "model": h.name, "fingerprint": fp, "ranks": {}}
    have = entry["ranks"]
    todo = sorted((a for key, a in asks.items() if key not in have), key=lambda a: len(a[1]))
    if todo:
        with progress("known facts (gold answer's rank)", len(todo), show=show) as advance:
            for i in range(0, len(todo), BATCH):
                part = todo[i:i + BATCH]
                for a, (rank, p) in zip(part, _rank_batch(h, part)):
                    have[a[0]] = [rank, p]
                advance(len(part))
        cache.put(name, entry)
    return {key: tuple(have[key]) for key in asks}


def known_table(h: ModelHandle, facts: Iterable[Fact], k: int = K, show: bool = False) -> list[Knowledge]:
    """The rank rule's record of each fact of ``facts``, in their order: known when the gold object's first
    token ranks within the model's top ``k`` (module docstring). ``show``: a progress bar while probing."""
    if isinstance(h, str):
        raise ConfigError(f"the rank rule asks the model itself: pass a loaded model "
                          f"(kneuron.load_model({h!r})), not the name {h!r}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    facts = list(facts)
    asks = [_ask(h, f) for f in facts]
    ranks = _ranks(h, {a[0]: a for a in asks if a is not None}, show)
    out = []
    for f, a in zip(facts, asks):
        rank, p = ranks[a[0]] if a is not None else (None, None)
        out.append(Knowledge(f.id, f.lang, f.relation, rank, p, rank is not None and rank <= k))
    return out


def summary(records: Iterable[Knowledge], k: int = K) -> dict:
    """Counts of the rank rule's records: per relation and language, and per language, the facts, those
    known (top-``k``), those top-1 and the median rank (of the facts the model could be asked); and the fact
    ids known in every language they have."""
    records = list(records)

    def count(rs: list[Knowledge]) -> dict:
        ranks = [r.rank for r in rs if r.rank is not None]
        return {"facts": len(rs), "known": sum(r.known for r in rs), "top1": sum(r.rank == 1 for r in rs),
                "median_rank": statistics.median(ranks) if ranks else None}

    per: dict = defaultdict(list)
    by_lang: dict = defaultdict(list)
    by_id: dict = defaultdict(list)
    for r in records:
        per[(r.relation, r.lang)].append(r)
        by_lang[r.lang].append(r)
        by_id[r.id].append(r.known)
    rels: dict = {}
    for rel, lang in sorted(per, key=lambda x: (relation_key(x[0]), x[1])):
        rels.setdefault(rel, {})[lang] = count(per[(rel, lang)])
    return {"k": k, "relations": rels, "languages": {lg: count(rs) for lg, rs in sorted(by_lang.items())},
            "ids": len(by_id), "known_in_all_languages": sum(all(v) for v in by_id.values())}


def known_report(h: ModelHandle, facts: Iterable[Fact], k: int = K, show: bool = False) -> dict:
    """The rank rule on ``facts`` as JSON: the rule, ``k``, the model, every fact's record and their
    ``summary`` (what `kneuron facts known --json` prints and reproduce keeps as known.json)."""
    records = known_table(h, facts, k, show)
    return {"rule": "rank", "k": k, "model": h.name, "summary": summary(records, k),
            "facts": [r.to_json() for r in records]}


# ----------------------------------------------------------------------------- the facts a command uses

def known_facts(handle: ModelHandle | str, facts: Iterable[Fact], rule: str | None = None, k: int = K,
                show: bool = False) -> list[Fact]:
    """The facts of ``facts`` the model knows, in their order, by ``rule`` (None: the model's own,
    ``rule_of``): "trained", those of an organism's training (a model that is no organism: every fact);
    "rank", those whose gold answer is in its top ``k`` (a loaded model only); "all", every fact."""
    facts = list(facts)
    rule = _check_rule(rule or rule_of(handle))
    if rule == "rank":
        return [f for f, r in zip(facts, known_table(handle, facts, k, show)) if r.known]
    trained = trained_on(handle) if rule == "trained" else None
    if trained is None:
        return facts
    ids, langs = trained
    return [f for f in facts if f.id in ids and (not langs or f.lang in langs)]


def facts_for(handle: ModelHandle | str, facts: str | Iterable[Fact], langs: Iterable[str] | None = None,
              limit: int | None = None, name: str | None = None, rule: str | None = None) -> list[Fact]:
    """The facts a command asks the model about: those of ``facts`` (a fact set name or file, or the
    facts loaded from it, then ``name`` names it in messages) in ``langs`` (None: every language) that
    the model knows (``known_facts`` by ``rule``; None: the model's own), of the first ``limit`` fact ids
    (in file order; None: all), each id in every language it has. ConfigError (one line) when none is left."""
    langs = tuple(langs) if langs is not None else None
    name = facts if isinstance(facts, str) else (name or "the facts")
    rule = _check_rule(rule or rule_of(handle))
    fs = load_facts(facts) if isinstance(facts, str) else list(facts)
    fs = known_facts(handle, [f for f in fs if langs is None or f.lang in langs], rule)
    keep = set(list(dict.fromkeys(f.id for f in fs))[:limit])
    fs = [f for f in fs if f.id in keep]
    if not fs:
        where = f" in {', '.join(langs)}" if langs else ""
        why = {"trained": f" that {_name(handle)} was trained on" if trained_on(handle) is not None else "",
               "rank": f" that {_name(handle)} knows (gold answer in its top {K})", "all": ""}[rule]
        raise ConfigError(f"{name}: no facts{where}{why}")
    return fs
