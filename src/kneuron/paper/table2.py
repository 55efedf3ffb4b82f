"""Table 2: cross-lingual knowledge editing. For each fact localized in two languages, edit (suppress
to 0, enhance x2, at the answer position) one neuron set and measure the fact in each language, with
an unrelated fact of another relation in the same language as the control (the Table 1 metric, SR).

Conditions (the edited set -> where it is measured):
  likn      the language-independent neurons (Module 2)          -> both languages
  own       the language's own knowledge neurons (Table 1)        -> that language
  other     the other language's knowledge neurons                 -> en: zh->en; zh: en->zh
  both      both languages' neurons at once ("sequential" as the paper meant it)   -> both
  random    random neurons, as many as the LIKN in the same layers, none a knowledge neuron -> both
The released code's "sequential" condition undid the English edit before measuring (paper-method.md
§7 C5), so it equals `other` for English and `own` for Chinese; `both` is the corrected version.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from kneuron.models.load import ModelHandle
from kneuron.probe import answer_prob
from kneuron.report.progress import track
from kneuron.paper.table1 import EditEffect, edit_effect, first_prompt, table1_of, unrelated_partner
from kneuron.runs.reopen import RunContents, check_model, load_run
from kneuron.neurons import Neuron
from kneuron.store.atomic import write_json
from kneuron.store.parquet import write_table

CONDITIONS = ("likn", "own", "other", "both", "random")


def random_like(template: list[Neuron], exclude: set[Neuron], n_neurons: int, rng: random.Random) -> list[Neuron]:
    """As many random neurons per layer as ``template`` has, none in ``exclude``."""
    out = []
    for layer, k in sorted(Counter(l for l, _ in template).items()):
        pool = [j for j in range(n_neurons) if (layer, j) not in exclude]
        out += [(layer, j) for j in sorted(rng.sample(pool, k))]
    return out


def edit_sets(neurons: dict, likn: dict[str, list[Neuron]], ids: list[str], langs: tuple[str, str],
              n_neurons: int, seed: int = 42) -> dict[tuple[str, str, str], list[Neuron]]:
    """(fact id, condition, measured language) -> the neurons edited."""
    a, b = langs
    rng = random.Random(seed)
    out = {}
    for fid in ids:
        na, nb, ln = list(neurons.get((fid, a), [])), list(neurons.get((fid, b), [])), list(likn[fid])
        rand = random_like(ln, set(na) | set(nb), n_neurons, rng)
        for lang, own, other in ((a, na, nb), (b, nb, na)):
            out[fid, "likn", lang] = ln
            out[fid, "own", lang] = own
            out[fid, "other", lang] = other
            out[fid, "both", lang] = sorted(set(na) | set(nb))
            out[fid, "random", lang] = rand
    return out


def crosslingual_effects(handle: ModelHandle, run: RunContents, likn: dict[str, list[Neuron]],
                         langs: tuple[str, str] = ("en", "zh"), only_with_likn: bool = True, seed: int = 42,
                         show_progress: bool = False) -> list[EditEffect]:
    """One effect per (fact, condition, language): the condition's set edited, measured in that language."""
    check_model(handle, run)
    by_key = {f.key: f for f in run.facts}
    ids = [fid for fid in likn if all((fid, l) in by_key for l in langs) and (likn[fid] or not only_with_likn)]
    sets = edit_sets(run.neurons, likn, ids, langs, handle.n_neurons, seed)
    todo = [(lang, i, fid) for lang in langs for i, fid in enumerate(ids)]
    facts = {lang: [by_key[fid, lang] for fid in ids] for lang in langs}
    partner = {lang: unrelated_partner(facts[lang], seed)[0] for lang in langs}
    base = {lang: [answer_prob(handle, *first_prompt(handle, f)).prob for f in facts[lang]] for lang in langs}
    out = []
    for lang, i, fid in track(todo, "cross-lingual editing", show=show_progress):
        j = partner[lang][i]
        for cond in CONDITIONS:
            out.append(edit_effect(handle, facts[lang][i], facts[lang][j], sets[fid, cond, lang], base[lang][i],
                               base[lang][j], condition=cond))
    return out


def table2(effects: list[EditEffect], langs: tuple[str, str] = ("en", "zh"), n_boot: int = 1000,
           outlier_cut: bool = False) -> dict:
    """SR (with a bootstrap interval) and mean related/unrelated changes per condition and language."""
    out = {}
    for cond in CONDITIONS:
        for lang in langs:
            es = [e for e in effects if e.condition == cond and e.lang == lang]
            if not es:
                continue
            j = table1_of(es, outlier_cut=outlier_cut, n_boot=n_boot).to_json()
            out.setdefault(cond, {})[lang] = {
                "n_facts": j["n_facts"], "sr": j["sr"], "sr_interval": j["sr_interval"],
                "suppress_related": j["suppress"]["related"], "suppress_unrelated": j["suppress"]["unrelated"],
                "enhance_related": j["enhance"]["related"], "enhance_unrelated": j["enhance"]["unrelated"],
                "mean_edited": sum(e.n_neurons for e in es) / len(es),
                "suppress_related_ci": j["suppress"]["related_mean"], "enhance_related_ci": j["enhance"]["related_mean"],
                "suppress_related_median": j["suppress"]["related_median"]["value"]}
    return out


def table2_by_known(effects: list[EditEffect], known, langs: tuple[str, str] = ("en", "zh"),
                    n_boot: int = 1000) -> dict:
    """``table2`` over the fact ids the model knows in both languages ("known_in_both") and over those judged
    and not known in both ("not_known_in_both"); ``known``: ``paper.facts_used.Known`` (None: {}). An id
    missing a record in a language is in neither part."""
    if known is None:
        return {}
    judged = lambda fid: all(known.by_fact.get((fid, lang)) is not None for lang in langs)  # noqa: E731
    both = lambda fid: all(known.by_fact.get((fid, lang)) for lang in langs)  # noqa: E731
    parts = {"known_in_both": [e for e in effects if judged(e.fact_id) and both(e.fact_id)],
             "not_known_in_both": [e for e in effects if judged(e.fact_id) and not both(e.fact_id)]}
    return {k: table2(v, langs, n_boot) for k, v in parts.items() if v}


@dataclass
class CrossLingual:
    """Table 2 of a two-language run, with the effects it was computed from; ``save`` writes both."""
    langs: tuple[str, str]
    seed: int
    n_facts: int
    n_facts_with_likn: int
    table: dict
    effects: list[EditEffect]

    def to_json(self) -> dict:
        return {"langs": list(self.langs), "seed": self.seed, "n_facts_with_likn": self.n_facts_with_likn,
                "n_facts": self.n_facts, "table": self.table}

    def save_effects(self, directory) -> None:
        """crosslingual.parquet: one row per fact, condition and language."""
        if self.effects:
            write_table(Path(directory) / "crosslingual.parquet", pa.Table.from_pylist([e.row() for e in self.effects]))

    def save(self, directory) -> None:
        """crosslingual.parquet and table2.json, each atomically."""
        self.save_effects(directory)
        write_json(Path(directory) / "table2.json", self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, directory) -> "CrossLingual":
        """What ``save`` wrote (effects: [] when no crosslingual.parquet was written)."""
        from kneuron.paper.table1 import _saved_json, read_effects
        j = _saved_json(Path(directory) / "table2.json")
        return cls(tuple(j["langs"]), j["seed"], j["n_facts"], j["n_facts_with_likn"], j["table"],
                   read_effects(Path(directory) / "crosslingual.parquet"))


def table2_from_run(handle: ModelHandle, run_dir, likn: dict[str, list[Neuron]] | None = None,
                    langs: tuple[str, str] = ("en", "zh"), facts_path=None, seed: int = 42, n_boot: int = 1000,
                    show_progress: bool = False) -> CrossLingual:
    """Table 2 over a two-language `locate` run (nothing is written: ``.save(directory)`` does that)."""
    from kneuron.paper.likn import likn_from_run
    run = load_run(run_dir, facts_path)
    if likn is None:
        likn = likn_from_run(run_dir, langs).per_fact
    effects = crosslingual_effects(handle, run, likn, langs, seed=seed, show_progress=show_progress)
    return CrossLingual(tuple(langs), seed, len(likn), sum(bool(v) for v in likn.values()),
                        table2(effects, langs, n_boot), effects)

