"""`kneuron reproduce --next-questions`: the AMIG authors' follow-up questions as steps of a reproduce run, and
their section of its report (issue 23).

    DKN clusters      Module 3 by the clusters rule (``DKNConfig(method="clusters")``, Chen et al., ACL 2025)
                      on the same AMIG run and candidates as the pairs rule: locate-amig/dkn-clusters.*
    fact-checking     ``factcheck.factcheck_from_run`` per language and per DKN rule (pairs, clusters): the
                      DKN score beside the plain KN score, the model's log p and a linear probe, on held-out
                      facts and held-out relations: locate-amig/factcheck[-clusters]-<lang>.*
    consistency       ``consistency.consistency_from_runs`` over locate-ig and locate-amig (Chen et al., ICLR
                      2025), and ``cas_effect.cas_effect_from_run`` on the AMIG run: only where facts have two
                      or more queries (``--prompts 0`` or N >= 2 on a fact set with paraphrases); with the
                      paper's one template per fact the section says so instead.

Each step is resumable the way its command is (rows appended as they are found) and its summary is kept as a
step record of the reproduce directory (``Reproduction._cached``), so a resumed run skips what is done. The
result (``run``'s dict) is results.json's "next"; ``section`` renders it from that dict alone.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from kneuron.report.document import Document
from kneuron.report.table import Column, Table, number

RULES = ("pairs", "clusters")
RUN = "locate-amig"                  # the run the paper's Module 3 and Table 3 use


def several_queries(facts) -> bool:
    """Whether any fact has two or more queries (templates): the consistency questions need them."""
    return any(len(f.templates) >= 2 for f in facts)


def run(handle, out: Path, cfg, langs, facts, dkn_pairs, timed: Callable[[str, Callable], Any],
        cached: Callable[[str, Callable], Any], show_progress: bool = False) -> dict:
    """The steps above on a reproduce directory ``out`` whose Modules 1-3 are done: ``cfg`` its
    ``ReproduceConfig``, ``langs`` and ``facts`` those it uses, ``dkn_pairs`` its pairs ``DKNRun``; ``timed`` /
    ``cached``: the reproduction's (a step's seconds into timings.json; a step's result as a step record)."""
    from kneuron.paper.dkn import dkn_from_run
    from kneuron.paper.factcheck import factcheck_from_run
    d = Path(out) / RUN
    clusters = timed("DKN clusters", lambda: dkn_from_run(
        handle, d, dataclasses.replace(cfg.dkn, method="clusters"), resume=True, show_progress=show_progress))
    checks: dict = {}
    result: dict = {"dkn_clusters": clusters.to_json(), "factcheck": checks, "consistency": None, "cas": None,
                    "notes": []}
    memos: dict = {lang: {} for lang in langs}         # per language, the rules share the items' attributions
    for rule, dkn in (("pairs", dkn_pairs), ("clusters", clusters)):
        checks[rule] = {}
        for lang in langs:
            def check(lang=lang, dkn=dkn):
                res = factcheck_from_run(handle, d, lang, dkn, "amig", cfg.steps, seed=cfg.seed, n_boot=cfg.n_boot,
                                         resume=True, show_progress=show_progress, memo=memos[lang])
                res.save(d)
                return res.to_json()
            checks[rule][lang] = timed(f"fact-checking ({rule}, {lang})",
                                       lambda c=check, r=rule, l=lang: cached(f"next-factcheck-{r}-{l}", c))
    if not several_queries(facts):
        result["notes"].append("consistency and CAS need two or more queries per fact; this run has one template per "
                               "fact (the paper's setting): run with --prompts 0 (or N >= 2) on a fact set "
                               "with paraphrases, or `kneuron consistency` / `kneuron cas-effect` on such a locate run")
        return result
    from kneuron.paper.cas_effect import cas_effect_from_run
    from kneuron.paper.consistency import consistency_from_runs
    result["consistency"] = timed("consistency", lambda: cached("next-consistency", lambda: consistency_from_runs(
        [Path(out) / "locate-ig", d]).to_dict()))
    result["cas"] = timed("CAS effect", lambda: cached("next-cas", lambda: cas_effect_from_run(
        handle, d, resume=True, show_progress=show_progress).to_json()))
    return result


# ----------------------------------------------------------------------------- the report's section

def _dkn_rules(pairs: dict, clusters: dict) -> Table:
    num2 = number(2)
    t = Table(["rule", "lang", "facts", Column("with a DKN", lambda v: f"{v:.0%}"), Column("groups/fact", num2),
               "sizes", Column("forward passes/fact", num2)])
    for rule, dk in (("pairs", pairs), ("clusters", clusters)):
        for lang, x in dk["langs"].items():
            t.add(rule, lang, x["n_facts"], x["share_with_dkn"], x["groups_per_fact"], str(x["sizes"] or "—"),
                  x["forward_passes_per_fact"])
    return t


def section(res: dict) -> Document:
    """'After the paper' from results.json's "next" (``run``'s dict) and Module 3's pairs summary."""
    from kneuron.paper.cas_effect import CasEffectReport
    from kneuron.paper.consistency import ConsistencyReport
    from kneuron.paper.factcheck import FactCheckBaselines
    nx = res["next"]
    doc = Document().heading(2, "After the paper — the authors' next questions")
    doc.para("Degenerate knowledge neurons by the clusters rule (Chen et al., ACL 2025: persistent clusters of the "
             "candidates' weights, each alone keeping the fact) beside Algorithm 1's pairs, on the same candidates "
             "and thresholds; fact-checking with each rule's DKNs beside the plain KN score, the model's own log p "
             "of the candidate and a linear probe on the hidden state at the statement's last token, on held-out "
             "facts and on held-out relations (AUROC with a 95 % bootstrap interval over facts; thresholds, t and "
             "the probe's layer tuned on validation).")
    doc.heading(3, "DKNs: pairs against clusters")
    doc.table(_dkn_rules(res["dkn"], nx["dkn_clusters"]))
    doc.heading(3, "Fact-checking beside baselines")
    for rule, by_lang in nx["factcheck"].items():
        for lang, j in by_lang.items():
            t = FactCheckBaselines.from_json(j).table()
            t.title = f"{t.title}, DKN rule: {rule}"
            doc.table(t)
    if nx.get("consistency"):
        doc.heading(3, "Localization consistency (Chen et al., ICLR 2025)")
        doc.table(ConsistencyReport.from_dict(nx["consistency"]).table())
    if nx.get("cas"):
        doc.heading(3, "Consistency-aware selection against the per-query and union sets")
        doc.table(CasEffectReport.from_json(nx["cas"]).table())
    for n in nx.get("notes", []):
        doc.para(f"Note: {n}.")
    return doc


__all__ = ["RULES", "run", "section", "several_queries"]
