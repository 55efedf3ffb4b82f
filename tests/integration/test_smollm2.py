"""On the real pretrained smollm2-135m (bundled GGUF): the answer and the located neurons are real."""
import pytest

from kneuron import LocateConfig, load_facts, load_model, locate
from kneuron.probe import answer_prob, predict
from kneuron.paper.table1 import edit_effects, load_run
from kneuron.facts import fact_file_hash, resolve_facts

pytestmark = pytest.mark.slow
KEEP = {"P36-000", "P37-001", "P30-000", "P38-000"}      # France/Paris, Germany/German, Kenya/Africa, Japan/yen


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


def test_paris_on_top(smol):
    assert predict(smol, "The capital of France is", 3)[0][0] == " Paris"
    assert answer_prob(smol, "The capital of France is", "Paris").prob > 0.5
    assert answer_prob(smol, "The capital of France is", " Paris").prob == answer_prob(
        smol, "The capital of France is", "Paris").prob


def test_suppressing_located_neurons_hits_the_fact_far_more_than_unrelated_facts(smol, tmp_path):
    path = resolve_facts("demo-en")
    facts = [f for f in load_facts(path) if f.id in KEEP]
    assert len({f.relation for f in facts}) == 4
    locate(smol, facts, LocateConfig(method="ig", steps=20), tmp_path / "run", facts_path=str(path),
           facts_hash=fact_file_hash(path), show_progress=False)
    rows = edit_effects(smol, load_run(tmp_path / "run"), ops=("suppress",))
    rel = [e.delta("suppress") for e in rows]
    unrel = [(e.p_suppress_unrelated - e.p_before_unrelated) / e.p_before_unrelated for e in rows]
    print("related", rel, "unrelated", unrel)
    assert all(e.n_neurons > 0 for e in rows)
    assert sum(rel) / len(rel) < -0.5                                  # the fact is mostly lost
    assert abs(sum(rel)) > 2 * abs(sum(unrel))                         # ... far more than unrelated facts
