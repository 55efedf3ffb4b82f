"""Which facts each of reproduce's steps uses and why, and how many of them the model knows.

The paper localises every fact with its gold answer y* (Eq. 1), also where the model answers something
else ("a model's low predictive probability does not hinder the accurate identification of knowledge
neurons"), so reproduce keeps every fact it can ask, known or not; what the model knows is recorded beside
the run (known.json, ``kneuron.organisms.known.known_report``: one record per fact and language) and used
here only to count, and to split Table 1 by it (``split_by_known``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

KNOWN_FILE = "known.json"
PRINCIPLE = ("Every table localises with the gold answer, also for the facts the model gets wrong: the paper's "
             "choice (Eq. 1 takes p(y*), the true answer; its fact-checking section: 'using the true value y* allows "
             "for correct knowledge neuron localization even when the model's output is erroneous'). So no fact is "
             "left out for not being known; the counts below say how many of each table's facts the model knows.")


@dataclass(frozen=True)
class Known:
    """Whether the model knows each fact: ``by_fact[(id, lang)]``, decided by ``rule`` (its words)."""
    rule: str
    by_fact: dict[tuple[str, str], bool]
    languages: dict | None = None     # known.json's summary per language: facts, known, top1, median_rank

    def count(self, ids, lang: str) -> dict:
        """{"facts", "known", "not_known", "not_judged"} over fact ``ids`` in ``lang``."""
        ids = list(ids)
        v = [self.by_fact.get((i, lang)) for i in ids]
        return {"facts": len(ids), "known": sum(x is True for x in v), "not_known": sum(x is False for x in v),
                "not_judged": sum(x is None for x in v)}


def read_known(out) -> Known | None:
    """The records reproduce wrote beside its results (``out``/known.json), None when there are none."""
    from kneuron.organisms.known import Knowledge
    path = Path(out) / KNOWN_FILE
    if not path.is_file():
        return None
    d = json.loads(path.read_text(encoding="utf-8"))
    recs = [Knowledge.from_json(r) for r in d["facts"]]
    rule = d.get("rule", "?")
    if rule == "rank":
        rule = f"rank: the gold object's first token within the model's top {d.get('k')} at the answer position"
    return Known(rule, {(r.id, r.lang): r.known for r in recs}, (d.get("summary") or {}).get("languages"))


def split_by_known(effects: list, known: Known | None) -> dict[str, list]:
    """Table 1's effects (each with ``fact_id`` and ``lang``) of the facts known and of those not known;
    {} without records."""
    if known is None:
        return {}
    out = {"known": [], "not_known": []}
    for e in effects:
        k = known.by_fact.get((e.fact_id, e.lang))
        if k is not None:
            out["known" if k else "not_known"].append(e)
    return out


def facts_used(res: dict, ids: dict[str, list[str]], known: Known | None) -> dict:
    """Per step: the facts it uses (ids per language), why, and with ``known`` how many are known (JSON).
    ``ids``: the run's fact ids per language (its facts.jsonl)."""
    langs = res["meta"]["langs_used"]
    rows = []

    def add(step: str, uses: str, why: str, per_lang: dict[str, list[str] | int]):
        """``per_lang``: the ids per language, or only their number (then nothing is known of them)."""
        rows.append({"step": step, "uses": uses, "why": why,
                     "per_lang": {lang: known.count(v, lang) if known and not isinstance(v, int)
                                  else {"facts": v if isinstance(v, int) else len(v)} for lang, v in per_lang.items()}})
    add("Table 1 (Module 1: B-KN, AMIG)", "every fact of the run", "the paper localises every fact with its gold "
        "answer", {lang: ids.get(lang, []) for lang in langs})
    t2 = res.get("table2")
    if t2:
        per = t2["likn"].get("count_per_fact")
        with_likn = sorted(f for f, n in (per or {}).items() if n)
        lk = t2["likn"]
        add("Module 2 (LIKN)", "the fact ids localised in both languages", "𝒩_en ∩ 𝒩_zh needs both",
            {lang: sorted(per) if per is not None else lk["n_facts"] for lang in t2["langs"]})
        add("Table 2", "the fact ids with a non-empty LIKN", "the paper keeps only facts with a LIKN (its code's "
            "cross_language_neurons.json)", {lang: with_likn if per is not None else lk["n_with_likn"]
                                              for lang in t2["langs"]})
        if per is None and known:
            rows[-1]["note"] = rows[-2]["note"] = "this result keeps no per-fact LIKN counts: known not counted"
    top = res["dkn"].get("config", {}).get("top_n")
    add("Module 3 (DKN)", f"every fact of the run, its top {top or 'all'} AMIG KNs", "as the paper: Algorithm 1 on "
        "each fact",
        {lang: ids.get(lang, []) for lang in res["dkn"]["langs"]})
    for lang, t in res["table3"].items():
        val, test = set(t.get("val_ids", [])), set(t.get("test_ids", []))
        fit = [i for i in ids.get(lang, []) if i not in val and i not in test]
        add(f"Table 3 ({lang}): fitting part", "60 % per relation: their DKNs make the relation's DKN set",
            "the paper's first part (80 %), less our validation part", {lang: fit})
        add(f"Table 3 ({lang}): validation part", "20 % per relation (a quarter of the 80 %)",
            "t and λ are tuned here, never on the test part (the paper tunes on none)", {lang: sorted(val)})
        add(f"Table 3 ({lang}): test part", "20 % per relation, each with its true and one wrong object",
            "scored once; the F1 of Table 3", {lang: sorted(test)})
    return {"principle": PRINCIPLE, "rule": known.rule if known else None, "steps": rows,
            "languages": known.languages if known else None}


__all__ = ["KNOWN_FILE", "PRINCIPLE", "Known", "facts_used", "read_known", "split_by_known"]
