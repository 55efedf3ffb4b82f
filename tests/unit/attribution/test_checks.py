"""kneuron.attribution.checks: what the architecture table declares of each family is what the run-time
checks find; a declared family runs no check, an unknown one is checked once per model and a no is logged; a bug
in the optimised path raises instead of reading as 'unsupported'."""
import logging

import pytest
import torch

from kneuron.attribution import Execution, attribute, attribute_many, checks as engine_checks, runner as engine_runner
from kneuron.attribution.runner import RowRunner
from kneuron.models import sites
from support.engine import EXTRA, ITEMS, any_handle
from support.tiny import FAMILIES, tiny_handle


def test_the_table_covers_every_family_tested():
    assert set(sites.ARCHITECTURES) == set(FAMILIES) | set(EXTRA)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) | set(EXTRA)))
def test_declared_capabilities_equal_the_run_time_check(family, monkeypatch):
    """What the architecture table declares for each family is what the run-time check (used for
    families the table does not know) finds, on mixed batches (prompts of different lengths, prefix
    caches stacked) and single-prompt ones."""
    h = any_handle(family)
    declared = sites.ARCHITECTURES[h.model.config.model_type]
    monkeypatch.setitem(sites.ARCHITECTURES, h.model.config.model_type, declared._replace(staircase=None, share=None))
    attribute_many(h, ITEMS[h.kind][:2], steps=2, execution=Execution(batch_size=4096, prefix_cache=False))
    attribute(h, *ITEMS[h.kind][1], steps=2)             # one single-token answer: one problem, with its cache
    checked = {c: h.capabilities.checked(c) for c in sites.CAPABILITIES}
    assert checked["share"] == {True: declared.share}
    assert checked["staircase"] == {True: declared.staircase, False: declared.staircase}


def test_a_declared_family_runs_no_check(monkeypatch):
    calls = []
    real = engine_checks.staircase_agrees
    monkeypatch.setattr(engine_checks, "staircase_agrees", lambda run, b: calls.append("staircase") or real(run, b))
    real_capable = RowRunner.capable

    def spy(self, capability, mixed, check):
        return real_capable(self, capability, mixed, lambda: calls.append(capability) or check())
    monkeypatch.setattr(RowRunner, "capable", spy)
    h = tiny_handle("llama")
    attribute_many(h, ITEMS["causal"], steps=2, execution=Execution(batch_size=4096))
    assert calls == [] and h.capabilities.checked("staircase") == {} and h.capabilities.checked("share") == {}


def test_an_unknown_family_is_checked_once_and_a_no_is_logged(monkeypatch, caplog):
    """A family the table does not know: checked at run time, once per model; BLOOM's staircase
    fails the check (a shape error in its attention), which is logged with the reason, and the
    scores are those of the declared family."""
    h = tiny_handle("bloom")
    items = ITEMS["causal"]
    ref = attribute_many(h, items, steps=2)
    monkeypatch.delitem(sites.ARCHITECTURES, "bloom")
    h = tiny_handle("bloom")
    checks = []
    real = engine_checks.staircase_agrees
    monkeypatch.setattr(engine_checks, "staircase_agrees", lambda run, b: checks.append(1) or real(run, b))
    with caplog.at_level(logging.INFO, logger="kneuron"):
        got = attribute_many(h, items, steps=2)
        attribute_many(h, items, steps=2)
    assert h.capabilities.checked("staircase") == {True: False}
    assert h.capabilities.checked("share") == {True: True}
    assert len(checks) == 1                                   # once per model, not per batch or call
    logged = [r.getMessage() for r in caplog.records if r.name == "kneuron"]
    stair = [m for m in logged if "staircase" in m]
    assert len(stair) == 1 and "must match" in stair[0]
    # the other no's: BLOOM's attention does not take a shared prefix (single and mixed batches)
    assert all("shared key/value prefix" in m for m in logged if m not in stair)
    assert h.capabilities.checked("prefix") == {True: False, False: False}
    for a, b in zip(got, ref):
        assert torch.allclose(a.scores, b.scores, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("error", [TypeError, IndexError, RuntimeError])
def test_a_bug_in_the_optimised_path_raises(error, monkeypatch):
    """A bug in the staircase (or the check that would run it) is not read as 'unsupported': it
    raises, for a declared family and for one the check runs on."""
    def broken(*a, **k):
        raise error("a bug")
    monkeypatch.setattr(engine_runner, "_first_rows", broken)
    with pytest.raises(error, match="a bug"):
        attribute(tiny_handle("gpt2"), "the capital of france is", "paris", steps=2)
    if error is RuntimeError:
        return                                 # (for an undeclared family: a shape error is a 'no', see above)
    monkeypatch.delitem(sites.ARCHITECTURES, "gpt2")
    with pytest.raises(error, match="a bug"):
        attribute(tiny_handle("gpt2"), "the capital of france is", "paris", steps=2)

