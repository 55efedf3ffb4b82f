"""kneuron.bench.editing.context: what each method is given for one edit -- a KN method its fact's cached
neurons minus the relation's common ones, likn and likn-transfer the neurons the fact shares with its other
language (likn also the other language's new object, likn-transfer not) -- and that likn-transfer's edit,
made through the bench, is computed from the edit language alone."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kneuron.bench.editing.config import EditingConfig, uses_other_language, uses_shared_neurons
from kneuron.bench.editing.context import BenchContext, Budget
from kneuron.bench.editing.disk import BenchDir
from kneuron.bench.editing.rows import CommonNeurons, FactNeurons
from kneuron.editing import edit
from kneuron.editing.records import build_cases
from kneuron.facts import Fact
from support.tiny import tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")

CAPITALS = [("france", "paris"), ("italy", "rome"), ("spain", "madrid")]
TEMPLATES = {"en": ("the capital of [X] is [Y]", "the city of [X] is [Y]"), "fr": ("[X] capital city is [Y]",)}
FACTS = [Fact(f"c{i}", "P36", lang, s, o, TEMPLATES[lang], wrong_objects=tuple(x for _, x in CAPITALS if x != o))
         for i, (s, o) in enumerate(CAPITALS) for lang in ("en", "fr")]
OWN = {"en": [(0, 1), (1, 2), (2, 9), (3, 4)], "fr": [(1, 2), (2, 9), (2, 3)]}   # every fact's, per language
COMMON = {"en": [(3, 4)], "fr": [(2, 3)]}
SHARED = [(1, 2), (2, 9)]


@pytest.fixture
def ctx(tmp_path):
    h = tiny_handle("gpt2")
    cases = build_cases(FACTS, 2, kind=h.kind, tokenizer=h.tokenizer, pool=FACTS, n_neighbours=1, n_generation=0)
    assert cases[0].langs == ["en", "fr"]
    neurons = {(f.id, f.lang): FactNeurons(tuple(OWN[f.lang]), {"en": 1.5, "fr": 2.0}[f.lang]) for f in FACTS}
    common = {("P36", lang): CommonNeurons(["c0", "c1"], 0.5, ns) for lang, ns in COMMON.items()}
    cfg = EditingConfig(n=2, methods=("kn", "likn", "likn-transfer"))
    return BenchContext(h, cfg, cases, {}, BenchDir(tmp_path / "run", lambda s: None), Budget(None),
                        neurons=neurons, common=common)


def test_each_method_is_given_what_it_reads(ctx):
    case = ctx.cases[0]
    en, fr = case.records["en"], case.records["fr"]
    kn = ctx.options("kn", case, "en")
    assert kn["neurons"] == OWN["en"] and kn["common"] == set(COMMON["en"]) and "other" not in kn
    likn = ctx.options("likn", case, "en")
    assert likn["neurons"] == SHARED and likn["other"] == fr.edit_fact and likn["other_new"] == fr.new
    assert "common" not in likn
    tr = ctx.options("likn-transfer", case, "en")
    assert tr["neurons"] == SHARED and tr["other"] == fr.edit_fact
    assert "other_new" not in tr and "common" not in tr
    assert ctx.options("likn-transfer", case, "fr")["other"] == en.edit_fact
    assert uses_shared_neurons("likn-transfer") and not uses_other_language("likn-transfer")
    assert uses_shared_neurons("likn") and uses_other_language("likn") and not uses_shared_neurons("kn")
    # its localisation cost is both languages' (the neurons are their intersection), as likn's
    assert ctx.local_seconds("likn-transfer", case, "en") == ctx.local_seconds("likn", case, "en") == 3.5
    assert ctx.local_seconds("kn", case, "en") == 1.5


def test_the_transfer_edit_is_computed_from_the_edit_language_alone(ctx):
    """Through the bench: the value written is kn's rule on the shared neurons with the edit language's terms;
    another other-language record (other prompts, another new object) leaves it bit-identical, while likn's
    edit moves with that record's new object."""
    case = ctx.cases[0]
    en, fr = case.records["en"], case.records["fr"]
    e = ctx.edit("likn-transfer", case, "en")
    assert e.info["neurons"] == SHARED and e.info["langs"] == ["en"] and not e.info.get("error")
    direct = edit(ctx.handle, en.edit_fact, en.new, method="kn", neurons=SHARED)
    assert [c.param for c in e.changes] == [c.param for c in direct.changes]
    assert all(torch.equal(a.value, b.value) for a, b in zip(e.changes, direct.changes))
    other_new = next(x for x in ("paris", "rome", "madrid") if x not in (fr.new, fr.old))
    changed_fr = replace(fr, new=other_new, prompt="somewhere else entirely",
                         fact=replace(fr.fact, templates=("[X] est la capitale de [Y]",)))
    moved = replace(case, records={"en": en, "fr": changed_fr})
    again = ctx.edit("likn-transfer", moved, "en")
    assert all(torch.equal(a.value, b.value) for a, b in zip(again.changes, e.changes))
    likn, likn_moved = ctx.edit("likn", case, "en"), ctx.edit("likn", moved, "en")
    assert not all(torch.equal(a.value, b.value) for a, b in zip(likn.changes, likn_moved.changes))


def test_one_language_gives_no_shared_neurons(ctx):
    """A case in one language has no other language to share neurons with: the transfer edit is one that
    changes nothing, with the reason (never the fact's own neurons, which would make it kn without filter)."""
    case = ctx.cases[0]
    one = replace(case, records={"en": case.records["en"]})
    assert "neurons" not in ctx.options("likn-transfer", one, "en")
    e = ctx.edit("likn-transfer", one, "en")
    assert e.changes == [] and "needs other=" in e.info["error"]


@pytest.mark.parametrize("method", ["kn", "kn-eai", "kn-erase", "kn-opt", "rome", "ft-m", "ft-l", "ft"])
def test_the_one_language_methods_see_nothing_of_the_other_language(ctx, method):
    """kn, kn-eai, kn-erase, kn-opt, rome, ft-m (ft) and ft-l are given the edit language's record alone (their off-diagonal
    cells are transfer): no other-language fact or new object, and a KN method its own language's neurons."""
    case = ctx.cases[0]
    got = ctx.options(method, case, "en")
    assert not {"other", "other_new"} & set(got)
    if "neurons" in got:
        assert got["neurons"] == OWN["en"] and got["common"] == set(COMMON["en"])
    assert ctx.local_seconds(method, case, "en") in (0.0, 1.5)          # never the other language's localisation


def test_each_one_layer_method_is_given_its_layer(ctx):
    """ft-l its own sweep's layer; rome, ft-m (and its old name ft), memit ROME's; none without a sweep; the
    user's option over both."""
    case = ctx.cases[0]
    swept = replace(ctx, rome_layer=2, layers={"ft-l": 0})
    got = {m: swept.options(m, case, "en").get("layer") for m in ("rome", "ft-m", "ft", "memit", "ft-l", "kn")}
    assert got == {"rome": 2, "ft-m": 2, "ft": 2, "memit": 2, "ft-l": 0, "kn": None}
    assert "layer" not in ctx.options("ft-l", case, "en") and "layer" not in replace(ctx, rome_layer=2).options(
        "ft-l", case, "en")
    mine = replace(swept, cfg=replace(ctx.cfg, method_options={"ft-l": {"layer": 1}}))
    assert mine.options("ft-l", case, "en")["layer"] == 1
