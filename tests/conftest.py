import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the suite never reads or writes the user's cache (ROME's statistics, value indexes): one of its own per session
_CACHE = tempfile.mkdtemp(prefix="kneuron-test-cache-")
os.environ["KNEURON_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
# tests/ is on sys.path through pytest (rootdir conftest, prepend import mode): the helpers are the package `support`


import pytest  # noqa: E402
import torch  # noqa: E402


# five small English facts of two relations (P36 with two templates for c1), words the tiny models know
SMALL_FACTS = [
    ("c1", "P36", "france", "paris", ["the capital of [X] is [Y] .", "[X] capital city is [Y] ."]),
    ("c2", "P36", "italy", "rome", ["the capital of [X] is [Y] ."]),
    ("c3", "P36", "spain", "madrid", ["the capital of [X] is [Y] ."]),
    ("l1", "P37", "italy", "italian", ["the language spoken in [X] is [Y] ."]),
    ("l2", "P37", "germany", "german", ["the language spoken in [X] is [Y] ."]),
]


@pytest.fixture(autouse=True)
def _verbosity_unchanged():
    """A test that leaves KNEURON_VERBOSE or the dependencies' progress bars changed fails here, not in
    whichever later test happens to load a model (order-dependent failures: bars on a CLI's stderr)."""
    from transformers.utils import logging as hf_logging
    before = (os.environ.get("KNEURON_VERBOSE"), hf_logging.is_progress_bar_enabled())
    yield
    after = (os.environ.get("KNEURON_VERBOSE"), hf_logging.is_progress_bar_enabled())
    if after[0] != before[0] or (after[1] and not before[1]):
        hf_logging.disable_progress_bar()
        os.environ.pop("KNEURON_VERBOSE", None) if before[0] is None else os.environ.update(KNEURON_VERBOSE=before[0])
        pytest.fail(f"the test left (KNEURON_VERBOSE, progress bars) at {after}, was {before}")


@pytest.fixture
def fact_file(tmp_path):
    """SMALL_FACTS as a fact file (JSON lines)."""
    import json
    p = tmp_path / "facts.jsonl"
    p.write_text("".join(json.dumps({"id": i, "relation": r, "lang": "en", "subject": s, "object": o,
                                     "templates": t}) + "\n" for i, r, s, o, t in SMALL_FACTS))
    return p


@pytest.fixture
def one_thread():
    """Tiny models are latency-bound: with 2 threads on a shared 2-core CPU each forward can be ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------- miniature organisms, trained once
# The miniature bilingual organisms the tests train on tiny.bilingual_facts() (each takes seconds).
MINI_ORGANISMS = {
    "clm": dict(kind="clm", layers=2, hidden=64, heads=2, intermediate=128, vocab_size=400, epochs=80,
                batch_size=16, lr=1e-2, eval_every=10, target_acc=1.0, seed=0),
    "mlm": dict(kind="mlm", layers=2, hidden=64, heads=2, intermediate=128, vocab_size=400, epochs=120,
                batch_size=16, lr=3e-3, eval_every=10, target_acc=1.0, seed=0),
}


@pytest.fixture(scope="session")
def mini_organism():
    """``mini_organism(kind)`` -> (model, tokenizer, TrainReport) for kind "clm" or "mlm" (configs in
    MINI_ORGANISMS). Each kind is trained once per test run, on first use, on one thread; every call
    returns a fresh deep copy, so a test may change what it gets (save_organism rounds the weights to
    fp16 in place, plant(inplace=True) grows the model) without touching the next test's organism."""
    import copy

    trained = {}

    def get(kind: str):
        if kind not in trained:
            from kneuron.organisms.train import OrganismConfig, train_organism
            from support.tiny import bilingual_facts
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                trained[kind] = train_organism(bilingual_facts(), OrganismConfig(**MINI_ORGANISMS[kind]),
                                               log=lambda s: None)
            finally:
                torch.set_num_threads(n)
        return copy.deepcopy(trained[kind])

    return get


@pytest.fixture
def attributed_prompts(monkeypatch):
    """The prompts each call of ``kneuron.neurons.attribute_many`` is given, one list per call (the real
    attribution still runs): what a localization fed its attribution."""
    import kneuron.neurons as nrn
    seen: list[list[str]] = []
    real = nrn.attribute_many

    def spy(handle, pairs, **kw):
        seen.append([p for p, _ in pairs])
        return real(handle, pairs, **kw)
    monkeypatch.setattr(nrn, "attribute_many", spy)
    return seen
