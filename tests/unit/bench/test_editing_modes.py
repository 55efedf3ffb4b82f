"""kneuron.bench.editing.modes (with rows, context, disk): each mode's rows, what is applied while each
row is measured, the weights left bit for bit as found, resuming from the run directory, and the typed
rows keeping the JSON the run directory has always held."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import torch

from kneuron.bench.editing import prepare
from kneuron.bench.editing.config import EditingConfig
from kneuron.bench.editing.context import BenchContext, Budget
from kneuron.bench.editing.disk import BenchDir
from kneuron.bench.editing.modes import Batched, Sequential, Single
from kneuron.bench.editing.rows import Checkpoint, EditRow, UneditedRow
from kneuron.editing import METHODS, Change, Edit, EditMethod
from kneuron.editing.base import value_index
from kneuron.editing.records import build_cases
from kneuron.facts import Fact
from support.tiny import snapshot, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")

CAPITALS = [("france", "paris"), ("italy", "rome"), ("spain", "madrid"), ("germany", "berlin")]
TEMPLATES = {"en": ("the capital of [X] is [Y]", "the city of [X] is [Y]"), "fr": ("[X] capital city is [Y]",)}
FACTS = [Fact(f"c{i}", "P36", lang, s, o, TEMPLATES[lang], wrong_objects=tuple(x for _, x in CAPITALS if x != o))
         for i, (s, o) in enumerate(CAPITALS) for lang in ("en", "fr")]
CALLS: list[dict] = []                  # each toy edit computed: its fact, the value vectors changed then
SEEN: list[tuple] = []                  # each row measured: case id, edit language, the value vectors changed


def neuron(fact: Fact) -> int:
    """The one value vector the toy edit of ``fact`` writes (a different one per fact and language)."""
    return int(fact.id[1:]) + (4 if fact.lang == "fr" else 0)


def toy_edit(handle, rewrite, scale=0.5):
    """Adds ``scale`` to one value vector of the last layer, computed on the model as it is now."""
    CALLS.append({"fact": rewrite.fact.key, "applied": changed(handle)})
    name, index = value_index(handle, [neuron(rewrite.fact)], handle.n_layers - 1)
    p = dict(handle.model.named_parameters())[name]
    return Edit(handle, "toy", rewrite, [Change(name, p[index].detach().clone() + scale, index)],
                info={"n": neuron(rewrite.fact)}, seconds=0.25)


@dataclass(frozen=True)
class Toy(EditMethod):
    scale: float = 0.5
    name = "toy"
    help = "adds scale to one value vector of the last layer (tests)"
    batch_rule: ClassVar[str | None] = "add"

    def edit(self, handle, rewrite, ctx=None) -> Edit:
        return toy_edit(handle, rewrite, self.scale)


W0: dict = {}


def changed(handle) -> set[int]:
    """The last layer's value vectors that differ from the unedited model's."""
    name, _ = value_index(handle, [0], handle.n_layers - 1)
    w, w0 = dict(handle.model.named_parameters())[name].detach(), W0[name]
    return {i for i in range(w.shape[0]) if not torch.equal(w[i], w0[i])}


@pytest.fixture
def ctx(monkeypatch, tmp_path):
    """A context over 3 cases in en and fr of a tiny GPT-2, the toy method registered, and a spy on
    ``BenchContext.row`` that records which value vectors are changed while each row is measured."""
    monkeypatch.setitem(METHODS, "toy", Toy)
    CALLS.clear()
    h = tiny_handle("gpt2")
    assert h.site.proj_path == "mlp.c_proj"             # Conv1D: a neuron's value vector is a row
    W0.clear()
    W0.update(snapshot(h))
    SEEN.clear()
    row = BenchContext.row

    def spy(self, method, case, lang, e, batch=None):
        SEEN.append((case.case_id, lang, changed(self.handle)))
        return row(self, method, case, lang, e, batch)
    monkeypatch.setattr(BenchContext, "row", spy)
    cfg = EditingConfig(n=3, methods=("toy",), n_neighbours=2, n_generation=0)
    cases = build_cases(FACTS, 3, kind=h.kind, tokenizer=h.tokenizer, pool=FACTS, n_neighbours=2, n_generation=0)
    assert len(cases) == 3 and cases[0].langs == ["en", "fr"]
    c = BenchContext(h, cfg, cases, {}, BenchDir(tmp_path / "run", lambda s: None), Budget(None))
    c = replace(c, before=prepare.unedited(c, cases))
    return replace(c, unrelated=prepare.unrelated(c))


def fresh(c: BenchContext, limit=None) -> BenchContext:
    """The same context with a new budget (another session of the same run)."""
    return replace(c, budget=Budget(limit))


def want(c, i, lang) -> int:
    return neuron(c.cases[i].records[lang].fact)


def test_single_applies_one_edit_per_row_and_leaves_the_weights(ctx):
    rows = list(Single().run("toy", ctx.cases, ctx))
    assert [(r.case_id, r.edit_lang) for r in rows] == [(c.case_id, g) for c in ctx.cases for g in ("en", "fr")]
    assert all(s == {want(ctx, i // 2, g)} for i, (_, g, s) in enumerate(SEEN))
    assert all(r.params_changed == 32 and r.seconds == 0.25 and r.batch is None for r in rows)
    assert all(set(r.measured) == {"en", "fr"} and r.scores["en"] is not None for r in rows)
    assert changed(ctx.handle) == set() and all(not x["applied"] for x in CALLS)
    # a second session reads every row back: nothing is recomputed, the same rows
    again = list(Single().run("toy", ctx.cases, fresh(ctx)))
    assert len(CALLS) == 6 and [r.to_json() for r in again] == [json.loads(json.dumps(r.to_json())) for r in rows]


def test_single_stops_when_the_budget_is_spent_and_resumes(ctx):
    assert len(list(Single().run("toy", ctx.cases, fresh(ctx, limit=3)))) == 3
    rest = list(Single().run("toy", ctx.cases, fresh(ctx, limit=None)))
    assert len(rest) == 6 and len(CALLS) == 6


def test_sequential_keeps_the_edits_and_undoes_them_all_bit_for_bit(ctx):
    rows = list(Sequential().run("toy", ctx.cases, ctx))
    assert [(r.case_id, r.edit_lang) for r in rows] == [(c.case_id, g) for g in ("en", "fr") for c in ctx.cases]
    # the i-th edit of a language is computed and measured with the earlier ones of that language applied
    for g, part in (("en", SEEN[:3]), ("fr", SEEN[3:])):
        assert [s for _, _, s in part] == [{want(ctx, j, g) for j in range(i + 1)} for i in range(3)]
    assert [x["applied"] for x in CALLS] == [set(), {want(ctx, 0, "en")}, {want(ctx, j, "en") for j in (0, 1)},
                                             set(), {want(ctx, 0, "fr")}, {want(ctx, j, "fr") for j in (0, 1)}]
    assert all(torch.equal(v, W0[k]) for k, v in ctx.handle.model.state_dict().items())
    curve = Sequential.curve("toy", ctx.cases, ctx)
    assert sorted(curve) == ["en", "fr"] and sorted(curve["en"]) == [1, 3]
    assert isinstance(curve["en"][3], Checkpoint) and len(curve["en"][3].scores) == 3


def test_a_checkpoint_holds_the_chains_state(ctx):
    """After k kept toy edits (+0.5 on k value vectors of 32 entries): ‖W − W₀‖/‖W₀‖ is √k · 0.5 · √32 over
    the written weight's norm, the unrelated NLL is the last kept edit's NLL after, GE is sampled from the
    chain's fixed prompts; the state reads back from its JSON."""
    rows = list(Sequential().run("toy", ctx.cases, ctx))
    name, _ = value_index(ctx.handle, [0], ctx.handle.n_layers - 1)
    w0 = float(W0[name].double().norm())
    curve = Sequential.curve("toy", ctx.cases, ctx)
    for k in (1, 3):
        st = curve["en"][k].state
        assert st["weight_ratio"] == pytest.approx((k ** 0.5) * 0.5 * 32 ** 0.5 / w0, rel=1e-6)
        assert st["nll"] == rows[k - 1].health.nll_after
        assert isinstance(st["GE"], float) and len(st["texts"]) == 3
        assert Checkpoint.from_json(json.loads(json.dumps(curve["en"][k].to_json()))).state == st
    for st in (curve["en"][1].state, curve["en"][3].state):          # the same prompts at every k
        assert [t[: len(c.records["en"].fact.subject)] for t, c in zip(st["texts"], ctx.cases)] == \
            [c.records["en"].fact.subject for c in ctx.cases]


def test_sequential_resumes_a_chain_with_its_kept_edits_reapplied(ctx):
    first = list(Sequential().run("toy", ctx.cases, fresh(ctx, limit=2)))
    assert len(first) == 2 and changed(ctx.handle) == set()
    SEEN.clear()
    rest = list(Sequential().run("toy", ctx.cases, fresh(ctx)))
    assert len(rest) == 6 and len(CALLS) == 6
    # the third en edit is measured with the two stored ones re-applied from the chain
    assert SEEN[0] == (ctx.cases[2].case_id, "en", {want(ctx, j, "en") for j in range(3)})
    assert all(torch.equal(v, W0[k]) for k, v in ctx.handle.model.state_dict().items())


@dataclass(frozen=True)
class ToyLowRank(EditMethod):
    """A rank-one change of the last layer's whole projection, computed from its weight now: W + a bᵀ with
    a = W's first column / 100 and b = (the fact's neuron + 1) / 10 everywhere (so a chain's order matters)."""
    name = "toy-lr"
    help = "a rank-one change of the last layer's projection (tests)"

    def edit(self, handle, rewrite, ctx=None) -> Edit:
        from kneuron.editing.lowrank import low_rank_add
        proj = handle.sites[handle.n_layers - 1]
        w = proj.weight.detach()
        a = (w[:, :1] / 100).float()
        b = torch.full((1, w.shape[1]), (neuron(rewrite.fact) + 1) / 10, dtype=torch.float32)
        name = next(n for n, p in handle.model.named_parameters() if p is proj.weight)
        return Edit(handle, "toy-lr", rewrite, [Change(name, low_rank_add(w, a, b), low_rank=(a, b))], seconds=0.25)


def test_a_chain_of_low_rank_edits_is_stored_as_factors_and_resumes_bit_for_bit(ctx, monkeypatch, tmp_path):
    """Each step's file holds the factors, not the weight; a chain stopped after 2 edits and resumed sees,
    at every row, the weights of the chain run in one go, bit for bit, and leaves the model as found."""
    monkeypatch.setitem(METHODS, "toy-lr", ToyLowRank)
    name = next(n for n, p in ctx.handle.model.named_parameters() if p is ctx.handle.sites[ctx.handle.n_layers - 1].weight)
    seen: list[torch.Tensor] = []
    row = BenchContext.row

    def spy(self, method, case, lang, e, batch=None):
        seen.append(dict(self.handle.model.named_parameters())[name].detach().clone())
        return row(self, method, case, lang, e, batch)
    monkeypatch.setattr(BenchContext, "row", spy)
    whole = list(Sequential().run("toy-lr", ctx.cases, replace(ctx, disk=BenchDir(tmp_path / "whole", lambda s: None))))
    in_one_go, seen[:] = list(seen), []
    assert len(list(Sequential().run("toy-lr", ctx.cases, fresh(ctx, limit=2)))) == 2
    assert all(torch.equal(v, W0[k]) for k, v in ctx.handle.model.state_dict().items())
    rest = list(Sequential().run("toy-lr", ctx.cases, fresh(ctx)))
    assert len(rest) == len(whole) == 6 and len(seen) == 6 and len(in_one_go) == 6
    assert all(torch.equal(x, y) for x, y in zip(seen, in_one_go))
    assert len({float(x.sum()) for x in in_one_go}) == 6                   # every step moved the weight
    assert all(torch.equal(v, W0[k]) for k, v in ctx.handle.model.state_dict().items())
    step = torch.load(ctx.disk.out / "sequential" / "toy-lr-en" / "1.pt", weights_only=True)
    assert [set(c) for c in step["changes"]] == [{"param", "low_rank", "base", "index"}]
    assert sum(t.numel() for t in step["changes"][0]["low_rank"]) < ctx.handle.sites[ctx.handle.n_layers - 1].weight.numel() / 4


def test_batched_applies_one_combined_edit_per_language(ctx, monkeypatch):
    import kneuron.editing.batch as batch_mod
    combined = []
    real = batch_mod.batch_edit
    monkeypatch.setattr(batch_mod, "batch_edit", lambda edits: combined.append(len(edits)) or real(edits))
    rows = list(Batched().run("toy", ctx.cases, ctx))
    assert combined == [3, 3]                                      # one combined edit per edit language
    assert all(not x["applied"] for x in CALLS)                    # each computed on the unedited model
    assert [s for _, _, s in SEEN] == [{want(ctx, j, g) for j in range(3)} for g in ("en", "fr") for _ in range(3)]
    assert all(r.batch == 3 and r.to_json()["batch"] == 3 and r.params_changed == 32 for r in rows)
    assert all(torch.equal(v, W0[k]) for k, v in ctx.handle.model.state_dict().items())


def test_batched_keeps_the_computed_members_when_stopped(ctx):
    assert list(Batched().run("toy", ctx.cases, fresh(ctx, limit=2))) == []    # stopped before the batch is whole
    rows = list(Batched().run("toy", ctx.cases, fresh(ctx)))
    assert len(rows) == 6 and len(CALLS) == 6                      # the 2 stored members are not recomputed
    assert {r.info["n"] for r in rows if r.edit_lang == "en"} == {want(ctx, j, "en") for j in range(3)}


# ----------------------------------------------------------------------------- the rows' JSON

OLD_ROW_KEYS = ["method", "case_id", "fact_id", "edit_lang", "new", "edit_seconds", "localize_seconds", "seconds",
                "params_changed", "info", "error", "measure", "scores"]


def test_an_edit_row_is_the_json_the_bench_always_wrote(ctx):
    row = next(iter(Single().run("toy", ctx.cases, ctx)))
    d = row.to_json()
    assert list(d) == OLD_ROW_KEYS + ["health"] and d["seconds"] == d["edit_seconds"] + d["localize_seconds"]
    assert d["error"] is None and list(d["measure"]) == list(d["scores"]) == ["en", "fr"]
    on_disk = json.loads((ctx.disk.out / "edits" / "toy" / f"{row.case_id}-en.json").read_text())
    assert on_disk == json.loads(json.dumps(d)) and list(on_disk) == OLD_ROW_KEYS + ["health"]
    assert EditRow.from_json(on_disk).to_json() == on_disk
    failed = EditRow.from_json({**on_disk, "info": {"error": "no neurons"}, "params_changed": 0})
    assert failed.error == "no neurons" and failed.to_json()["error"] == "no neurons"
    u = json.loads((ctx.disk.out / "unedited" / f"{row.case_id}.json").read_text())
    assert list(u) == ["case_id", "measure"] and UneditedRow.from_json(u).to_json() == u


def test_a_row_that_does_not_read_back_is_moved_aside_and_redone(ctx):
    said = []
    c = replace(ctx, disk=BenchDir(ctx.disk.out, said.append))
    list(Single().run("toy", ctx.cases, c))
    path = ctx.disk.out / "edits" / "toy" / f"{ctx.cases[0].case_id}-fr.json"
    path.write_text(json.dumps({"scores": {}, "seconds": 1.0, "params_changed": 1}))   # keys missing: damaged
    again = list(Single().run("toy", ctx.cases, c))
    assert len(CALLS) == 7 and len(again) == 6 and (ctx.disk.out / "damaged").is_dir()
    assert len(said) == 1 and "damaged" in said[0]


def test_kept_edits_are_edit_states_and_the_older_formats_still_read(ctx):
    from kneuron.bench.editing.disk import edit_of
    list(Sequential().run("toy", ctx.cases, ctx))
    state = torch.load(ctx.disk.out / "sequential" / "toy-en" / "0.pt", weights_only=False)
    assert state["method"] == "toy" and state["seconds"] == 0.25 and len(state["changes"]) == 1
    e = edit_of(ctx.handle, "toy", state)
    old_chain = [{"param": c["param"], "value": c["value"], "index": e.changes[0].index} for c in state["changes"]]
    old_member = {"changes": old_chain, "info": {"n": 1}, "seconds": 0.5}
    for old, info, seconds in ((old_chain, {}, 0.0), (old_member, {"n": 1}, 0.5)):
        back = edit_of(ctx.handle, "toy", old)
        assert back.info == info and back.seconds == seconds and back.method == "toy"
        assert [c.param for c in back.changes] == [c.param for c in e.changes]
        assert all(torch.equal(a.value, b.value) for a, b in zip(back.changes, e.changes))
    # a member stored in the old format is used as it is, not recomputed
    c0 = ctx.cases[0]
    path = ctx.disk.out / "batch" / "toy-en"
    path.mkdir(parents=True)
    torch.save(old_member, path / f"{c0.case_id}.pt")
    member = ctx.disk.batch_member(ctx.handle, "toy", "en", c0.case_id)
    assert member.info == {"n": 1} and member.seconds == 0.5 and not member.applied


def test_the_bench_refuses_a_localization_option_it_would_not_use():
    """The bench localises every fact once for all KN methods: a KN method's own localize / max_prompts
    would be silently ignored, so they are refused in one line; other options pass."""
    from kneuron.errors import ConfigError
    EditingConfig(n=1, methods=("kn", "rome"), method_options={"kn": {"lambda2": 4.0}}).validate()
    for opts in ({"localize": {"steps": 20}}, {"max_prompts": 2}):
        with pytest.raises(ConfigError, match="cannot be set in the bench") as e:
            EditingConfig(n=1, methods=("kn",), method_options={"kn": opts}).validate()
        assert "\n" not in str(e.value)
