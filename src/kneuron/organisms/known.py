"""Which facts a model knows: the one rule every command applies before it asks a model about facts.

    known_facts(handle, facts) -> the facts of ``facts`` the model knows, in their order
    trained_on(handle)         -> (fact ids, languages) of a model organism, None for another model
    facts_for(handle, "en-zh", langs=("en", "zh"), limit=10)  -> a command's facts: languages, known, first ids

The rule is named by the model's card (``kneuron.models.registry.ModelCard.known``) or found on disk:
"trained" -- a model organism (a bundled one, or a directory holding ``facts.txt`` and ``training.json``)
knows the facts it was trained on, nothing else; "all" -- any other model: no rule yet, every fact
counts as known (a rule by the gold answer's rank, which needs ``probe``, belongs here next).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from kneuron.errors import ConfigError
from kneuron.facts import Fact, load_facts
from kneuron.models.load import ModelHandle
from kneuron.models.registry import ORGANISMS_DIR, find_card


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


def known_facts(handle: ModelHandle | str, facts: Iterable[Fact]) -> list[Fact]:
    """The facts of ``facts`` the model knows, in their order. The rule: a model organism knows a fact
    when its id is in the organism's ``facts.txt`` and its language among those it was trained in
    (``trained_on``); any other model is taken to know every fact."""
    facts = list(facts)
    trained = trained_on(handle)
    if trained is None:
        return facts
    ids, langs = trained
    return [f for f in facts if f.id in ids and (not langs or f.lang in langs)]


def facts_for(handle: ModelHandle | str, facts: str | Iterable[Fact], langs: Iterable[str] | None = None,
              limit: int | None = None, name: str | None = None) -> list[Fact]:
    """The facts a command asks the model about: those of ``facts`` (a fact set name or file, or the
    facts loaded from it, then ``name`` names it in messages) in ``langs`` (None: every language) that
    the model knows (``known_facts``), of the first ``limit`` fact ids (in file order; None: all), each
    id in every language it has. ConfigError (one line) when none is left."""
    langs = tuple(langs) if langs is not None else None
    name = facts if isinstance(facts, str) else (name or "the facts")
    fs = load_facts(facts) if isinstance(facts, str) else list(facts)
    fs = known_facts(handle, [f for f in fs if langs is None or f.lang in langs])
    keep = set(list(dict.fromkeys(f.id for f in fs))[:limit])
    fs = [f for f in fs if f.id in keep]
    if not fs:
        where = f" in {', '.join(langs)}" if langs else ""
        trained = f" that {_name(handle)} was trained on" if trained_on(handle) is not None else ""
        raise ConfigError(f"{name}: no facts{where}{trained}")
    return fs
