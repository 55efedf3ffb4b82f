"""Run directories as the explorer shows them: the facts, each fact's neurons with their scores, its
LIKN and DKN groups (per DKN rule the run has: pairs, clusters) and Table 1 effects, per-layer counts.
Everything is read (never written) with the library's readers, from the files `locate`, `evaluate`,
`likn`, `dkn` and `reproduce` leave.

The DKN fields keep their meaning from before the clusters rule: ``dkn`` is the pairs rule's (dkn.jsonl);
``dkn_rules`` holds every rule the run has, by name (``kneuron.runs.store.DKN_FILES``)."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from kneuron.models.load import ModelHandle
from kneuron.paper.likn import language_independent
from kneuron.paper.table1 import edit_effect, first_prompt, unrelated_partner
from kneuron.probe import answer_prob
from kneuron.runs.reopen import check_model, load_run, model_spec
from kneuron.runs.store import run_dirs  # noqa: F401  (the explorer's entry point: the runs at a path)

Key = tuple[str, str]                      # (fact id, language)
Groups = list[list[tuple[int, int]]]       # a fact's DKN groups, each a list of (layer, index)
PAIRS = "pairs"                            # the rule the plain ``dkn`` fields show (as before the clusters rule)


class RunView:
    def __init__(self, run_id: str, path: Path):
        self.id, self.path = run_id, Path(path)
        self.run = load_run(path)
        self.spec = model_spec(self.run.store.meta)
        self.rows = self.run.store.facts().to_pylist()
        self.scores: dict[Key, list[tuple[int, int, float]]] = defaultdict(list)
        for r in self.run.store.neurons().to_pylist():
            self.scores[(r["fact_id"], r["lang"])].append((r["layer"], r["neuron"], r["score"]))
        self.likn = self._likn()
        # rule -> (fact id, lang) -> groups, for each rule the run has rows of
        self.dkn: dict[str, dict[Key, Groups]] = {
            m: {k: [[tuple(n) for n in g] for g in r["groups"]] for k, r in self.run.store.dkn(m).items()}
            for m in self.run.store.dkn_methods()}
        self.effects = self.run.store.evaluation()
        self.report = self.run.store.report()

    def _likn(self) -> dict[str, list[tuple[int, int]]]:
        """likn.parquet where `likn` or `reproduce` wrote it, else the library's intersection when the
        run covers two languages or more."""
        saved = self.run.store.likn()
        if saved:
            return saved
        langs = tuple(sorted({r["lang"] for r in self.rows}))
        if len(langs) < 2:
            return {}
        return language_independent(self.run.neurons, {(r["fact_id"], r["lang"]) for r in self.rows}, langs).per_fact

    def groups(self, key: Key) -> dict[str, Groups]:
        """The fact's DKN groups by each rule the run has (a fact a rule has no row of: [])."""
        return {m: rows.get(key, []) for m, rows in self.dkn.items()}

    def histogram(self) -> dict:
        """Per layer: knowledge neurons (over all facts), language-independent ones, ones in DKN groups
        (``dkn``: the pairs rule's; ``dkn_rules``: each rule's)."""
        L = self.spec.n_layers or 1 + max((l for ns in self.scores.values() for l, _, _ in ns), default=0)

        def count(layers) -> list[int]:
            c = Counter(layers)
            return [c[l] for l in range(L)]
        rules = {m: count(n[0] for gs in rows.values() for g in gs for n in g) for m, rows in self.dkn.items()}
        return {"kn": count(l for ns in self.scores.values() for l, _, _ in ns),
                "likn": count(l for ns in self.likn.values() for l, _ in ns),
                "dkn": rules.get(PAIRS) or count(()), "dkn_rules": rules}

    def summary(self) -> dict:
        meta = self.run.store.meta
        facts = [{"i": i, "id": r["fact_id"], "lang": r["lang"], "relation": r.get("relation"),
                  "subject": r.get("subject"), "prompt": r.get("prompt"), "target": r.get("target"),
                  "p": r.get("p_target"), "prediction": r.get("top_token"), "p_prediction": r.get("top_p"),
                  "n_neurons": r.get("n_neurons")} for i, r in enumerate(self.rows)]
        return {"id": self.id, "path": str(self.path), "model": self.spec.name, "method": meta.get("method"),
                "n_layers": self.spec.n_layers, "n_neurons": self.spec.n_neurons, "facts": facts,
                "histogram": self.histogram(), "report": f"/runs/{self.id}/report" if self.report else None,
                "dkn_rules": list(self.dkn),
                "has": {"likn": bool(self.likn), "dkn": bool(self.dkn.get(PAIRS)), "effects": bool(self.effects)}}

    def fact(self, i: int) -> dict:
        key = (self.rows[i]["fact_id"], self.rows[i]["lang"])
        groups = {m: [[list(n) for n in g] for g in gs] for m, gs in self.groups(key).items()}
        return {"i": i, "id": key[0], "lang": key[1],
                "neurons": [{"layer": l, "index": j, "score": s} for l, j, s in self.scores.get(key, [])],
                "likn": [list(n) for n in self.likn.get(key[0], [])],
                "dkn": groups.get(PAIRS, []), "dkn_rules": groups,
                "effects": self.effects.get(key)}

    def containing(self, layer: int, index: int) -> list[dict]:
        """The facts whose knowledge neurons include (layer, index), with its rank, score and groups."""
        out = []
        for i, r in enumerate(self.rows):
            key = (r["fact_id"], r["lang"])
            for rank, (l, j, s) in enumerate(self.scores.get(key, [])):
                if (l, j) == (layer, index):
                    held = {m: any((l, j) in g for g in gs) for m, gs in self.groups(key).items()}
                    out.append({"run": self.id, "i": i, "id": key[0], "lang": key[1], "relation": r.get("relation"),
                                "rank": rank, "score": s, "likn": (l, j) in self.likn.get(key[0], []),
                                "dkn": held.get(PAIRS, False), "dkn_rules": held})
        return out

    def measure(self, handle: ModelHandle, i: int, seed: int = 42) -> dict:
        """Table 1 effects of fact i, now (as `evaluate` measures them: suppress x0 and enhance x2 of its
        neurons, on the fact and on its unrelated partner)."""
        check_model(handle, self.run)
        facts = self.run.facts
        g = facts[unrelated_partner(facts, seed)[0][i]]
        p = [answer_prob(handle, *first_prompt(handle, f)).prob for f in (facts[i], g)]
        return edit_effect(handle, facts[i], g, self.run.neurons.get(facts[i].key, []), p[0], p[1]).row()
