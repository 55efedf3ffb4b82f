"""models.capabilities: one Capabilities object per handle -- declared by the architecture table, else
checked once per (capability, variant), kept, logged when no, inspectable; no module global."""
import logging

import pytest
import torch

from kneuron.models import sites
from kneuron.models.capabilities import Capabilities, is_oom
from support.tiny import tiny_handle


def test_every_handle_has_its_own():
    a, b = tiny_handle("llama"), tiny_handle("llama")
    assert isinstance(a.capabilities, Capabilities) and a.capabilities is not b.capabilities
    a.capabilities.record("reuse_prefix", True)
    assert b.capabilities.verdicts == {} and a.capabilities.checked("reuse_prefix") == {None: True}


def test_a_declared_family_is_never_checked():
    h = tiny_handle("bloom")
    calls = []
    check = lambda: calls.append(1) or True              # noqa: E731
    assert h.capabilities.decide(h, "staircase", check, variant=True) is False      # the table: no staircase
    assert h.capabilities.decide(h, "share", check, variant=True) is True
    assert h.capabilities.known(h.model, "prefix") is False
    assert calls == [] and h.capabilities.verdicts == {}


def test_an_unknown_family_is_checked_once_per_variant_and_a_no_is_logged(monkeypatch, caplog):
    h = tiny_handle("llama")
    monkeypatch.delitem(sites.ARCHITECTURES, "llama")
    calls = []

    def fails():
        calls.append(1)
        raise RuntimeError("The size of tensor a (4) must match the size of tensor b (2)\nmore")
    with caplog.at_level(logging.INFO, logger="kneuron"):
        assert h.capabilities.known(h.model, "staircase", True) is None
        assert h.capabilities.decide(h, "staircase", fails, variant=True) is False
        assert h.capabilities.decide(h, "staircase", fails, variant=True) is False
        assert h.capabilities.decide(h, "staircase", lambda: True, variant=False) is True
        assert h.capabilities.decide(h, "share", lambda: False, variant=True) is False
    assert calls == [1]
    assert h.capabilities.checked("staircase") == {True: False, False: True}
    assert h.capabilities.known(h.model, "share", True) is False
    logged = [r.getMessage() for r in caplog.records if r.name == "kneuron"]
    assert len(logged) == 2 and "must match" in logged[0] and "more" not in logged[0]
    assert "differ" in logged[1]
    assert "staircase[True]=off" in repr(h.capabilities) and "staircase[False]=on" in repr(h.capabilities)


@pytest.mark.parametrize("error", [TypeError("a bug"), torch.OutOfMemoryError("CUDA out of memory")])
def test_a_bug_or_running_out_of_memory_raises(error, monkeypatch):
    h = tiny_handle("llama")
    monkeypatch.delitem(sites.ARCHITECTURES, "llama")

    def check():
        raise error
    with pytest.raises(type(error)):
        h.capabilities.decide(h, "prefix", check, variant=False)
    assert h.capabilities.verdicts == {}                  # nothing kept: asked again next time


def test_reuse_prefix_is_never_declared_and_unknown_names_fail():
    h = tiny_handle("gpt2")
    assert h.capabilities.declared(h.model, "reuse_prefix") is None
    assert h.capabilities.declared(h.model, "prefix") is True
    assert h.capabilities.decide(h, "reuse_prefix", lambda: True) is True
    with pytest.raises(KeyError):
        h.capabilities.decide(h, "teleport", lambda: True)
    with pytest.raises(KeyError):
        h.capabilities.record("teleport", True)
    assert repr(Capabilities()) == "Capabilities(nothing checked)"


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("size mismatch"))


def test_the_edit_objective_keeps_its_prefix_reuse_verdict_on_the_handle(monkeypatch):
    """ROME's prefix reuse is checked against the plain run once per handle (BLOOM in float64: it
    differs, and the fallback is kept), replacing a module-level dict keyed by model."""
    from kneuron.editing import objective
    from kneuron.editing.base import Rewrite
    from kneuron.editing.objective import Objective, batch, prefixes
    from kneuron.facts import Fact
    checks, real = [], objective.Runner.check
    monkeypatch.setattr(objective.Runner, "check", lambda self, *a: checks.append(1) or real(self, *a))
    fact = Fact("P36-x", "P36", "en", "france", "paris", ("the capital of [X] is [Y] .",))
    for family, ok in (("llama", True), ("bloom", False)):
        h = tiny_handle(family)
        b = batch(h, Rewrite(fact, "rome"), prefixes(h))
        first = Objective(h, b, reuse_prefix=True)
        assert h.capabilities.checked("reuse_prefix") == {None: ok}
        assert (first.run.shape != b.shape) is ok                   # a no falls back to the plain run
        again = Objective(h, b, reuse_prefix=True)
        assert (again.run.shape != b.shape) is ok                   # not checked again: the kept verdict
    assert len(checks) == 2                                         # once per handle
