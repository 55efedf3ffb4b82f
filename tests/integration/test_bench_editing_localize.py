"""The editing bench's KN localization on the bundled organism-clm (issue 21): Dai's filter counted over
every fact of the relation (``common_over="relation"``, at most ``common_max``) or, as before, over the first
``common_facts`` (``"cases"``); each fact localized once and cached, a resume localizing nothing again; a run
stored before these options resumes as it was made; ``localize_prompts="rewrite"`` never attributes a
paraphrase; bad values are one-line errors."""
from __future__ import annotations

import json
from collections import Counter

import pytest

import kneuron.editing.localize as loc
from kneuron.bench.editing import run_editing_bench
from kneuron.editing import METHODS
from kneuron.runs.store import RunStoreError

from integration.test_bench_editing import KW, ToyKN, cli, one_line_error, org, same, toy  # noqa: F401 (fixtures)

KN = dict(KW, methods=["kn"])


@pytest.fixture
def localized(monkeypatch, toy):
    """The toy as kn (given the bench's neurons and filter); fact_neurons replaced by ``localized.rule``
    (fact -> its neurons), each call's fact key and max_prompts kept in ``localized.calls``."""
    monkeypatch.setitem(METHODS, "kn", ToyKN)

    class Spy:
        calls: list = []
        rule = staticmethod(lambda f: [(1, 0)])
    spy = Spy()

    def fact_neurons(handle, fact, max_prompts=None, **kw):
        spy.calls.append((fact.key, max_prompts))
        return spy.rule(fact)
    monkeypatch.setattr(loc, "fact_neurons", fact_neurons)
    return spy


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _case_ids(out) -> set[str]:
    return {json.loads(x)["fact_id"] for x in (out / "cases.jsonl").read_text().splitlines() if x.strip()}


def test_the_filter_counts_every_fact_of_the_relation(org, toy, localized, tmp_path):
    """A neuron of the edited fact and of the relation's facts outside the first common_facts is common only
    when the filter counts the whole relation; run.json and the report say how many facts it counted."""
    h, facts = org
    run_editing_bench(h, facts, out=tmp_path / "probe", common_over="cases", common_facts=3, **KN)
    first = {k: set(v["facts"]) for k, v in _json(tmp_path / "probe" / "neurons" / "common.json").items()}
    edited = _case_ids(tmp_path / "probe")
    localized.rule = lambda f: [(1, int(f.id.split("-")[1])), (2, 7)] + (
        [(3, 3)] if f.id in edited or f.id not in first[f"{f.relation}.{f.lang}"] else [])
    given = {}
    for over in ("cases", "relation"):
        toy.clear()
        run_editing_bench(h, facts, out=tmp_path / over, common_over=over, common_facts=3, **KN)
        given[over] = [c["common"] for c in toy]
        assert len(given[over]) == 6 and all((3, 3) in c["neurons"] for c in toy)
    assert all(c == {(2, 7)} for c in given["cases"])                     # (3, 3): 1 of 3 facts, not common
    assert all(c == {(2, 7), (3, 3)} for c in given["relation"])          # most of the relation's facts
    size = Counter(f"{f.relation}.{f.lang}" for f in facts)
    common = _json(tmp_path / "relation" / "neurons" / "common.json")
    assert {k: len(v["facts"]) for k, v in common.items()} == {k: size[k] for k in common}
    assert all(len(v["facts"]) == len(set(v["facts"])) for v in common.values())
    meta = _json(tmp_path / "relation" / "run.json")
    assert meta["common_counts"] == {k: size[k] for k in sorted(common)} and meta["common_over"] == "relation"
    assert _json(tmp_path / "cases" / "run.json")["common_counts"] == {k: 3 for k in sorted(common)}
    md = (tmp_path / "relation" / "report.md").read_text()
    n = sorted(size[k] for k in common)
    assert f"10 % of the relation's facts: counted over {n[0]}" in md and "--common-over relation" in md
    assert "the first 3 facts of the relation" in (tmp_path / "cases" / "report.md").read_text()
    capped = run_editing_bench(h, facts, out=tmp_path / "capped", common_max=5, **KN)
    assert set(capped["meta"]["common_counts"].values()) == {5} and capped["meta"]["common_max"] == 5


def test_a_resume_localizes_nothing_again(org, localized, tmp_path):
    """Each fact is localized once; a resume reads every fact's neurons back, and redoes only a missing one."""
    h, facts = org
    out = tmp_path / "run"
    assert run_editing_bench(h, facts, out=out, limit=1, **KN) is None
    keys = [k for k, _ in localized.calls]
    files = sorted(p for p in (out / "neurons").glob("*.json") if p.name != "common.json")
    assert len(keys) == len(set(keys)) == len(files) > 6                 # more than the 6 records' facts
    assert {m for _, m in localized.calls} == {1}                         # a new run: the rewrite prompt only
    localized.calls.clear()
    res = run_editing_bench(h, facts, out=out, resume=True, **KN)
    assert localized.calls == []
    files[0].unlink()
    files[-1].unlink()
    again = run_editing_bench(h, facts, out=out, resume=True, **KN)
    assert sorted(k for k, _ in localized.calls) == sorted(tuple(p.stem.rsplit(".", 1)) for p in (files[0], files[-1]))
    same(res, again)


def test_a_run_stored_before_the_options_resumes_as_it_was_made(org, localized, tmp_path):
    """run.json without common_over / common_max / localize_prompts: resumed as "cases" over common_facts and
    "all" prompts, nothing localized again, the same results as such a run uninterrupted; asking the new
    behaviour of it is refused (one line), not silently recomputed."""
    h, facts = org
    old = dict(common_over="cases", localize_prompts="all")
    out = tmp_path / "old"
    assert run_editing_bench(h, facts, out=out, limit=2, **old, **KN) is None
    assert {m for _, m in localized.calls} == {None}
    meta = _json(out / "run.json")
    for k in ("common_over", "common_max", "localize_prompts", "common_counts"):
        meta.pop(k)
    (out / "run.json").write_text(json.dumps(meta))
    common = (out / "neurons" / "common.json").read_text()
    localized.calls.clear()
    res = run_editing_bench(h, facts, out=out, resume=True, **KN)
    assert localized.calls == [] and (out / "neurons" / "common.json").read_text() == common
    meta = _json(out / "run.json")
    assert (meta["common_over"], meta["localize_prompts"], meta["common_max"]) == ("cases", "all", None)
    assert set(meta["common_counts"].values()) == {10}
    same(res, run_editing_bench(h, facts, out=tmp_path / "full", **old, **KN))
    assert "every usable template, the paraphrases PS is measured on included" in (out / "report.md").read_text()
    with pytest.raises(RunStoreError, match=r"common_over differs \(run has 'cases', now 'relation'\)"):
        run_editing_bench(h, facts, out=out, resume=True, common_over="relation", **KN)
    with pytest.raises(RunStoreError, match=r"localize_prompts differs \(run has 'all', now 'rewrite'\)"):
        run_editing_bench(h, facts, out=out, resume=True, localize_prompts="rewrite", **KN)
    new = _json(tmp_path / "full" / "run.json")
    run_editing_bench(h, facts, out=tmp_path / "new", **KN)
    assert (new["common_over"], _json(tmp_path / "new" / "run.json")["common_over"]) == ("cases", "relation")


def test_rewrite_localization_never_attributes_a_paraphrase(org, toy, tmp_path, monkeypatch, attributed_prompts):
    """Real localization, the attribution's prompts spied on: "rewrite" gives it each record's rewrite prompt
    alone (the filter's other facts one prompt each), never a paraphrase PS is measured on; "all" does."""
    monkeypatch.setitem(METHODS, "kn", ToyKN)
    seen = attributed_prompts
    h, facts = org
    out = tmp_path / "rewrite"
    run_editing_bench(h, facts, out=out, common_max=2, **KN)
    cases = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines() if x.strip()]
    rewrite = {r["prompt"] for c in cases for r in c["records"].values()}
    paraphrases = {p["text"] for c in cases for r in c["records"].values() for p in r["paraphrases"]}
    assert paraphrases and all(len(s) == 1 for s in seen) and rewrite <= {s[0] for s in seen}
    assert not paraphrases & {p for s in seen for p in s}
    seen.clear()
    run_editing_bench(h, facts, out=tmp_path / "all", common_over="cases", common_facts=1, localize_prompts="all",
                      **KN)
    assert len(seen) == 6 and paraphrases <= {p for s in seen for p in s}


def test_bad_values_are_one_line_errors(toy, tmp_path):
    base = ("bench", "editing", "--model", "organism-clm", "--methods", "toy", "--out", tmp_path / "b")
    one_line_error(cli(*base, "--common-over", "facts"), "common_over must be relation or cases, not 'facts'")
    one_line_error(cli(*base, "--localize-prompts", "paraphrases"), "must be rewrite or all, not 'paraphrases'")
    one_line_error(cli("bench", "editing", "--methods", "kn", "--option", "kn.prompts=rewrite", "--out",
                       tmp_path / "c"), "kn: prompts cannot be set in the bench", "--localize-prompts")
    one_line_error(cli("edit", "--model", "organism-clm", "--id", "P36-018", "--new", "Rome", "--localize-prompts",
                       "x"), "must be rewrite or all, not 'x'")
    from kneuron.bench.editing import EditingConfig
    from kneuron.errors import ConfigError
    with pytest.raises(ConfigError, match="common_max must be >= 1"):
        EditingConfig(common_max=0).validate()
