"""Edit health in the editing bench (test_editing_modes' tiny GPT-2 and toy method): every row carries it,
rows stored without it still load and render, the unedited unrelated NLL is measured once, and sequential
mode's collapse guard undoes a planted disabling edit bit for bit (undo: the chain goes on; stop: it ends;
keep: no guard), also across a resume."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
import torch

from kneuron.bench.editing import prepare
from kneuron.bench.editing.config import EditingConfig, resumed_meta, run_meta
from kneuron.bench.editing.disk import BenchDir
from kneuron.bench.editing.modes import Batched, Sequential, Single
from kneuron.bench.editing.rows import EditRow
from kneuron.bench.editing_report import document, results
from kneuron.editing import METHODS, Change, Edit
from kneuron.errors import ConfigError
from kneuron.report.render import markdown
from kneuron.runs.store import RunStoreError
from support.tiny import snapshot
from unit.bench.test_editing_modes import CALLS, SEEN, W0, Toy, ctx, fresh, toy_edit, want  # noqa: F401 (ctx: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
BOOM: set[str] = set()                  # the fact ids whose edit is disabling


@dataclass(frozen=True)
class Boom(Toy):
    """The toy edit, but for a fact in BOOM a large random change of the token embeddings (disabling)."""
    name = "boom"

    def edit(self, handle, rewrite, ctx=None) -> Edit:
        if rewrite.fact.id not in BOOM:
            return toy_edit(handle, rewrite, self.scale)
        p = dict(handle.model.named_parameters())["transformer.wte.weight"].detach()
        noise = torch.randn(p.shape, generator=torch.Generator().manual_seed(0), dtype=p.dtype)
        return Edit(handle, "boom", rewrite, [Change("transformer.wte.weight", p + noise)], seconds=0.5)


@pytest.fixture
def boom(ctx, monkeypatch):
    """The context with Boom registered, case 1's fact planted, and every row's weights kept (snaps)."""
    monkeypatch.setitem(METHODS, "boom", Boom)
    BOOM.clear()
    BOOM.add(ctx.cases[1].fact_id)
    snaps: dict = {}
    row = type(ctx).row

    def spy(self, method, case, lang, e, batch=None):
        snaps[(case.case_id, lang)] = snapshot(self.handle)
        return row(self, method, case, lang, e, batch)
    monkeypatch.setattr(type(ctx), "row", spy)
    return ctx, snaps


def guard(c, on_collapse: str):
    return replace(c, cfg=replace(c.cfg, methods=("boom",), on_collapse=on_collapse))


def unedited(h) -> bool:
    return all(torch.equal(v, W0[k]) for k, v in h.model.state_dict().items())


def test_every_row_has_health_and_round_trips(ctx):
    rows = list(Single().run("toy", ctx.cases, ctx))
    assert all(r.health is not None and r.guarded is None for r in rows)
    h = rows[0].health
    assert h.nll_before == ctx.unrelated.nll and list(h.nll_before) == ["en"]     # fr is not in the set
    assert h.weight_ratio > 0 and isinstance(h.continuation, str) and not h.disabling()
    for r in rows:
        d = json.loads(json.dumps(r.to_json()))
        assert EditRow.from_json(d) == r and EditRow.from_json(d).to_json() == d
    old = {k: v for k, v in rows[0].to_json().items() if k != "health"}         # a row stored before health
    back = EditRow.from_json(json.loads(json.dumps(old)))
    assert back.health is None and back.guarded is None and "health" not in back.to_json()
    marked = replace(rows[0], guarded="undo").to_json()
    assert list(marked)[-2:] == ["health", "guarded"] and EditRow.from_json(marked).guarded == "undo"


def test_the_unedited_unrelated_nll_is_measured_once_per_run(ctx, monkeypatch):
    import kneuron.editing.health as health
    stored = json.loads((ctx.disk.out / "unrelated.json").read_text())
    assert stored["langs"] == ["en"] and stored["nll"] == ctx.unrelated.nll
    monkeypatch.setattr(health, "unrelated_nll", lambda *a, **k: pytest.fail("measured again"))
    assert prepare.unrelated(ctx) == ctx.unrelated                               # read back
    (ctx.disk.out / "unrelated.json").write_text(json.dumps({**stored, "digest": "other"}))
    said = []
    monkeypatch.setattr(health, "unrelated_nll", lambda h, langs: {"en": 1.0})
    assert prepare.unrelated(replace(ctx, warn=said.append)).nll == {"en": 1.0} and "other sentences" in said[0]


def test_a_batch_row_has_the_batchs_health(ctx):
    rows = [r for r in Batched().run("toy", ctx.cases, ctx) if r.edit_lang == "en"]
    hs = [r.health for r in rows]
    assert len({json.dumps(h.nll_after) for h in hs}) == 1 and len({h.weight_ratio for h in hs}) == 1
    assert hs[0].weight_ratio > max(r.health.weight_ratio for r in Single().run("toy", ctx.cases, fresh(ctx))) / 2


def test_the_guard_undoes_a_disabling_edit_bit_for_bit_and_the_chain_goes_on(boom):
    ctx, snaps = boom
    c0, c1, c2 = ctx.cases
    rows = list(Sequential().run("boom", ctx.cases, guard(ctx, "undo")))
    assert [(r.case_id, r.edit_lang) for r in rows] == [(c.case_id, g) for g in ("en", "fr") for c in ctx.cases]
    bad = [r for r in rows if r.guarded]
    assert [(r.case_id, r.edit_lang, r.guarded) for r in bad] == [(c1.case_id, "en", "undo"), (c1.case_id, "fr", "undo")]
    assert all(r.health.disabling() and r.health.rise["en"] > 5 for r in bad)
    assert not any(r.health.disabling() for r in rows if not r.guarded)
    for g in ("en", "fr"):
        # the guarded row is measured with the weights as they were before the edit, bit for bit
        a, b = snaps[(c0.case_id, g)], snaps[(c1.case_id, g)]
        assert all(torch.equal(a[k], b[k]) for k in a)
        # the chain goes on: the next edit is kept on top of case 0's, without the planted one
        nxt = snaps[(c2.case_id, g)]
        assert torch.equal(nxt["transformer.wte.weight"], W0["transformer.wte.weight"])
    assert [s for _, _, s in SEEN] == [s for g in ("en", "fr") for s in
                                       ({want(ctx, 0, g)}, {want(ctx, 0, g)}, {want(ctx, 0, g), want(ctx, 2, g)})]
    assert unedited(ctx.handle)
    stored = json.loads((ctx.disk.out / "edits" / "boom" / f"{c1.case_id}-en.json").read_text())
    assert stored["guarded"] == "undo" and stored["health"]["nll_after"]["en"] > stored["health"]["nll_before"]["en"]
    res = results(run_meta(ctx.cfg, ctx.handle, ctx.cases, "toy"), ctx.cases,
                  {c.case_id: ctx.unedited(c) for c in ctx.cases}, {"boom": {(r.case_id, r.edit_lang): r for r in rows}},
                  {}, None, None, {}, ctx.unrelated.nll)
    assert res["health"]["boom"]["en"]["guarded"] == res["health"]["boom"]["en"]["disabling"] == 1
    assert [(d["case_id"], d["guarded"]) for d in res["disabling"]] == [(c1.case_id, "undo")] * 2


def test_a_guarded_chain_resumes_as_an_uninterrupted_one(boom, tmp_path):
    ctx, _ = boom
    g = guard(ctx, "undo")
    assert len(list(Sequential().run("boom", ctx.cases, fresh(g, limit=2)))) == 2     # case 0 kept, case 1 guarded
    assert unedited(ctx.handle)
    rest = list(Sequential().run("boom", ctx.cases, fresh(g)))
    full = list(Sequential().run("boom", ctx.cases, replace(fresh(g), disk=BenchDir(tmp_path / "full", lambda s: None))))
    assert [r.to_json() for r in rest] == [r.to_json() for r in full]
    assert [r.guarded for r in rest] == [None, "undo", None] * 2 and unedited(ctx.handle)


def test_stop_ends_the_chain_at_the_disabling_edit(boom):
    ctx, snaps = boom
    c0, c1, _ = ctx.cases
    g = guard(ctx, "stop")
    rows = list(Sequential().run("boom", ctx.cases, g))
    assert [(r.case_id, r.edit_lang, r.guarded) for r in rows] == [(c0.case_id, "en", None), (c1.case_id, "en", "stop"),
                                                                  (c0.case_id, "fr", None), (c1.case_id, "fr", "stop")]
    a, b = snaps[(c0.case_id, "en")], snaps[(c1.case_id, "en")]
    assert all(torch.equal(a[k], b[k]) for k in a) and unedited(ctx.handle)
    n = len(CALLS)
    assert [r.to_json() for r in Sequential().run("boom", ctx.cases, fresh(g))] == [r.to_json() for r in rows]
    assert len(CALLS) == n                                   # a resumed chain that stopped stays stopped


def test_keep_keeps_the_disabling_edit(boom):
    ctx, snaps = boom
    rows = list(Sequential().run("boom", ctx.cases, guard(ctx, "keep")))
    assert not any(r.guarded for r in rows) and rows[1].health.disabling()
    after = snaps[(ctx.cases[2].case_id, "en")]["transformer.wte.weight"]
    assert not torch.equal(after, W0["transformer.wte.weight"]) and unedited(ctx.handle)


def test_the_report_lists_disabling_edits_and_renders_rows_without_health(boom):
    ctx, _ = boom
    rows = list(Single().run("boom", ctx.cases, guard(ctx, "undo")))
    meta = run_meta(ctx.cfg, ctx.handle, ctx.cases, "toy")
    before = {c.case_id: ctx.unedited(c) for c in ctx.cases}
    res = results(meta, ctx.cases, before, {"boom": {(r.case_id, r.edit_lang): r for r in rows}}, {}, None, None, {},
                  ctx.unrelated.nll)
    md = markdown(document(res, None))
    assert "## Edit health" in md and "### Disabling edits (2)" in md and "0.5 nats" in md
    assert json.dumps(rows[2].health.continuation, ensure_ascii=False) in md
    old = [EditRow.from_json({k: v for k, v in r.to_json().items() if k != "health"}) for r in rows]
    res_old = results(meta, ctx.cases, before, {"boom": {(r.case_id, r.edit_lang): r for r in old}}, {}, None, None, {})
    md = markdown(document(res_old, None))
    assert "| boom | en | 3 | 0 | n/a | n/a |" in md and "Disabling edits" not in md
    stored_before = {k: v for k, v in res_old.items() if k not in ("health", "disabling", "unrelated", "disabling_margin")}
    assert "Edit health" not in markdown(document(stored_before, None))


def test_the_guard_setting_is_checked_and_kept_on_resume(ctx):
    with pytest.raises(ConfigError, match="on_collapse must be one of undo, stop, keep"):
        EditingConfig(n=1, methods=("toy",), on_collapse="nope").validate()
    seq = replace(ctx.cfg, mode="sequential")
    meta = run_meta(seq, ctx.handle, ctx.cases, "toy")
    assert meta["on_collapse"] == "undo"
    older = {k: v for k, v in meta.items() if k != "on_collapse"}          # a run stored before the guard
    with pytest.raises(RunStoreError, match="on_collapse differs .*--on-collapse keep"):
        resumed_meta(older, meta, seq, "run")
    keep = replace(seq, on_collapse="keep")
    resumed_meta(older, run_meta(keep, ctx.handle, ctx.cases, "toy"), keep, "run")
    resumed_meta({**older, "mode": "single"}, run_meta(ctx.cfg, ctx.handle, ctx.cases, "toy"), ctx.cfg, "run")
