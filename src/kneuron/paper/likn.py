"""Module 2: language-independent knowledge neurons (LIKN) — for each fact, the neurons shared by its
knowledge-neuron sets in every language (each language thresholded with its own tau)."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kneuron.errors import ConfigError
from kneuron.neurons import Neuron
from kneuron.store.atomic import write_json
from kneuron.store.parquet import write_table


@dataclass
class LIKNResult:
    langs: tuple[str, ...]
    per_fact: dict[str, list[Neuron]]            # fact id -> shared neurons (sorted), for ids in every language
    n_facts: int                                 # ids present in every language
    missing: dict[str, int] = field(default_factory=dict)   # ids lacking a language (not counted), per language

    @property
    def share_nonempty(self) -> float:
        return sum(bool(v) for v in self.per_fact.values()) / self.n_facts if self.n_facts else 0.0

    def layers(self) -> Counter:
        """How many language-independent neurons each layer holds, over all facts."""
        return Counter(l for ns in self.per_fact.values() for l, _ in ns)

    def per_fact_counts(self) -> dict[int, int]:
        """How many facts have 0, 1, 2, ... language-independent neurons (every count up to the largest; the
        facts with none are the ``n_facts`` without, also when read back away from the run)."""
        c = Counter(len(v) for v in self.per_fact.values() if v)
        c[0] = self.n_facts - sum(c.values())
        return {k: c.get(k, 0) for k in range(max(c, default=-1) + 1)}

    def to_json(self) -> dict:
        return {"langs": list(self.langs), "n_facts": self.n_facts, "missing": self.missing,
                "n_with_likn": sum(bool(v) for v in self.per_fact.values()),
                "share_nonempty": self.share_nonempty,
                "mean_likn_per_fact": (sum(map(len, self.per_fact.values())) / self.n_facts) if self.n_facts else 0.0,
                "layers": {str(k): v for k, v in sorted(self.layers().items())},
                "facts_by_count": {str(k): v for k, v in self.per_fact_counts().items()},
                "count_per_fact": {f: len(v) for f, v in sorted(self.per_fact.items())}}

    def save(self, run_dir) -> None:
        """likn.parquet (fact id, layer, neuron) and likn.json, in the run directory."""
        rows = [{"fact_id": f, "layer": l, "neuron": j} for f, ns in self.per_fact.items() for l, j in ns]
        schema = pa.schema([("fact_id", pa.string()), ("layer", pa.int64()), ("neuron", pa.int64())])
        write_table(Path(run_dir) / "likn.parquet", pa.Table.from_pylist(rows, schema=schema))
        write_json(Path(run_dir) / "likn.json", self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, run_dir) -> "LIKNResult":
        """What ``save`` wrote. likn.parquet holds only the facts with shared neurons: the facts with none
        are those of the run (its facts.parquet) present in every language, when ``run_dir`` holds the
        run (else only the facts with shared neurons are known)."""
        from kneuron.paper.table1 import _saved_json
        j = _saved_json(Path(run_dir) / "likn.json")
        langs = tuple(j["langs"])
        per_fact: dict[str, list[Neuron]] = defaultdict(list)
        path = Path(run_dir) / "likn.parquet"
        if path.is_file():
            for r in pq.read_table(path).to_pylist():
                per_fact[r["fact_id"]].append((r["layer"], r["neuron"]))
        facts = Path(run_dir) / "facts.parquet"
        if len(per_fact) < j["n_facts"] and facts.is_file():
            have: dict[str, set] = defaultdict(set)
            for r in pq.read_table(facts, columns=["fact_id", "lang"]).to_pylist():
                have[r["fact_id"]].add(r["lang"])
            every = [f for f in sorted(have) if all(lang in have[f] for lang in langs)]
            if len(every) == j["n_facts"] and set(per_fact) <= set(every):
                per_fact = {f: per_fact.get(f, []) for f in every}
        return cls(langs, {f: sorted(v) for f, v in sorted(dict(per_fact).items())}, j["n_facts"], j["missing"])


def language_independent(neurons: dict[tuple[str, str], list[Neuron]], fact_langs: set[tuple[str, str]],
                         langs: tuple[str, ...] = ("en", "zh")) -> LIKNResult:
    """Intersect each fact's neuron sets across ``langs``. ``neurons`` maps (fact id, lang) to its
    knowledge neurons; ``fact_langs`` lists every (fact id, lang) that was localized (a fact with no
    neurons in a language is present with an empty set, not missing)."""
    if len(langs) < 2:
        raise ConfigError(f"language-independent neurons need at least two languages, got {list(langs)}")
    by_id: dict[str, set[str]] = defaultdict(set)
    for fid, lang in fact_langs:
        by_id[fid].add(lang)
    per_fact, missing = {}, Counter()
    for fid in sorted(by_id):
        have = by_id[fid]
        if not all(lang in have for lang in langs):
            for lang in langs:
                missing[lang] += lang not in have
            continue
        shared = set(neurons.get((fid, langs[0]), []))
        for lang in langs[1:]:
            shared &= set(neurons.get((fid, lang), []))
        per_fact[fid] = sorted(shared)
    return LIKNResult(tuple(langs), per_fact, len(per_fact), {k: v for k, v in missing.items() if v})


def likn_from_run(run_dir, langs: tuple[str, ...] = ("en", "zh")) -> LIKNResult:
    """Module 2 over a `locate` run that covered several languages (``.save(run_dir)`` writes it)."""
    from kneuron.runs.store import open_run
    store = open_run(run_dir)
    done = {(r["fact_id"], r["lang"]) for r in store.facts().select(["fact_id", "lang"]).to_pylist()}
    nrn: dict = defaultdict(list)
    for r in store.neurons().select(["fact_id", "lang", "layer", "neuron"]).to_pylist():
        nrn[(r["fact_id"], r["lang"])].append((r["layer"], r["neuron"]))
    return language_independent(nrn, done, langs)
