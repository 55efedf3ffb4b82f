"""Editing metrics equal hand-computed values on a toy bigram model whose probabilities are known; batched
scoring equals one prompt at a time; GE is ROME's n-gram entropy."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kneuron.editing import metrics as M
from kneuron.editing.records import Neighbour, Probe, Prompt, Record, Symmetry
from kneuron.facts import Fact
from kneuron.models.load import ModelHandle
from kneuron.probe import answer_prob
from support.tiny import tiny_handle, word_tokenizer

TOK = word_tokenizer("causal")
V = len(TOK)


def tid(w: str) -> int:
    return TOK.convert_tokens_to_ids(w)


class Bigram(nn.Module):
    """logits at a position depend only on the token there: table[token]."""

    def __init__(self, rows: dict[str, dict[str, float]]):
        super().__init__()
        t = torch.zeros(V, V, dtype=torch.float64)
        for w, nxt in rows.items():
            for x, v in nxt.items():
                t[tid(w), tid(x)] = v
        self.table = nn.Parameter(t, requires_grad=False)
        self.config = SimpleNamespace(vocab_size=V, pad_token_id=0)

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def handle(rows) -> ModelHandle:
    return ModelHandle(Bigram(rows), TOK, "causal", "bigram", None, [], [])


AFTER = {"is": {"paris": 2.0, "rome": 1.0}, "in": {"rome": 3.0}, "city": {"berlin": 5.0}, "rome": {"paris": 1.0}}
BEFORE = {**AFTER, "city": {"spain": 6.0}}
Z_IS, Z_IN, Z_CITY = math.e ** 2 + math.e + V - 2, math.e ** 3 + V - 1, math.e ** 5 + V - 1

FACT = Fact("c1", "P36", "en", "france", "paris", ("the capital of [X] is [Y] .",))
REC = Record(FACT, "rome", 0, 0, "the capital of france is",
             paraphrases=(Prompt("the city in", 1), Prompt("the river is", 2)),
             neighbours=(Neighbour("c2", "spain", "the capital of spain is", "madrid", 0, False),
                         Neighbour("c3", "x", "the capital city", "berlin", 0, False)))


def test_scores_are_the_known_probabilities():
    s = M.score(handle(AFTER), [("the capital of france is", "paris"), ("the capital of france is", "rome"),
                                ("the capital of france is", "rome paris")])
    assert s[0].p == pytest.approx(math.e ** 2 / Z_IS)
    assert s[1].p == pytest.approx(math.e / Z_IS)
    # a two-token object: the geometric mean of its tokens' probabilities, the first token given in context
    assert s[2].p == pytest.approx(math.sqrt(math.e / Z_IS * math.e / (math.e + V - 1)))
    assert s[0].argmax == [tid("paris")] and s[0].acc == 1.0 and s[1].acc == 0.0
    assert s[2].argmax == [tid("paris"), tid("paris")] and s[2].acc == 0.5


def test_counterfact_and_easyedit_metrics_by_hand():
    before = M.measure(handle(BEFORE), [REC], generation=False)[0]
    after = M.measure(handle(AFTER), [REC], generation=False)[0]
    r = M.record_scores(after, before)
    p_is_paris, p_is_rome = math.e ** 2 / Z_IS, math.e / Z_IS
    p_in_rome, p_in_paris = math.e ** 3 / Z_IN, 1 / Z_IN
    assert r["ES"] == 0.0 and r["EM"] == pytest.approx(p_is_rome - p_is_paris)
    assert r["PS"] == 0.5 and r["PM"] == pytest.approx(((p_in_rome - p_in_paris) + (p_is_rome - p_is_paris)) / 2)
    # neighbours: madrid (1/Z) loses to rome (e/Z) after "is"; berlin (e^5/Z) beats rome (1/Z) after "city"
    assert r["NS"] == 0.5
    assert r["NM"] == pytest.approx(((1 - math.e) / Z_IS + (math.e ** 5 - 1) / Z_CITY) / 2)
    assert r["reliability"] == 0.0 and r["generalization"] == 0.5 and r["flip_rate"] == 0.0
    assert r["locality"] == 0.5                 # "city"'s top-1 moved from spain to berlin, "is"'s stayed
    assert r["GE"] is None and r["symmetry"] is None
    s = M.summarize([r], seconds=[2.0], params=[10])
    assert (s["ES"], s["PS"], s["NS"], s["S"]) == (0.0, 50.0, 50.0, 0.0)
    assert s["EM"] == pytest.approx(100 * r["EM"]) and s["locality"] == 50.0
    assert s["seconds_per_edit"] == 2.0 and s["params_changed"] == 10 and list(s) == list(M.METRICS)


def test_s_is_the_harmonic_mean():
    rows = [{"ES": 1.0, "PS": 0.5, "NS": 0.5}, {"ES": 1.0, "PS": 0.5, "NS": 0.5}]
    assert M.summarize(rows)["S"] == pytest.approx(3 / (1 / 100 + 2 / 50))
    assert M.hmean([50.0, None, 10.0]) is None


def test_locality_as_easyedit_readme():
    tok = lambda a: M.Scored(0.0, 1.0, a, a)      # noqa: E731
    pair = M.RewriteScores(tok([1]), tok([2]))
    after = M.Measured(pair, (), (M.NeighbourScores(tok([29, 234, 334]), tok([1])),))
    before = M.Measured(pair, (), (M.NeighbourScores(tok([29, 234, 333]), tok([1])),))
    assert M.record_scores(after, before)["locality"] == pytest.approx(2 / 3)
    assert M.record_scores(after)["PS"] is None


def test_ns_split_by_the_neighbours_object_by_hand():
    """One same-object neighbour ("in": paris 1/Z loses to rome e^3/Z) and one other-object one ("city": berlin
    e^5/Z beats rome 1/Z): NS_same 0, NS_other 1, NS their mean; a record with one kind has None for the other."""
    rec = Record(FACT, "rome", 0, 0, "the capital of france is",
                 neighbours=(Neighbour("c2", "spain", "the city in", "paris", 0, True),
                             Neighbour("c3", "x", "the capital city", "berlin", 0, False)))
    after = M.measure(handle(AFTER), [rec], generation=False)[0]
    assert M.ns_split(after, rec) == {"NS_same": 0.0, "NS_other": 1.0}
    assert M.record_scores(after)["NS"] == 0.5
    only = Record(FACT, "rome", 0, 0, "the capital of france is", neighbours=rec.neighbours[1:])
    assert M.ns_split(M.measure(handle(AFTER), [only], generation=False)[0], only) == {"NS_same": None,
                                                                                        "NS_other": 1.0}


def test_attribute_and_essence_scores_by_hand():
    """Attribute prompts: their mean P(new). Essence: the texts' mean token NLL after minus before; 0 for a
    no-op edit; by hand for "the capital city berlin", whose only changed row is "city" (BEFORE -> AFTER)."""
    rec = Record(FACT, "rome", 0, 0, "the capital of france is",
                 probes=(Probe("attribute", "the capital of spain is", "rome"), Probe("attribute", "the city in", "rome"),
                         Probe("portability.x", "the city in", "paris")),
                 essence=("the capital city berlin",))
    before = M.measure(handle(BEFORE), [rec], generation=False)[0]
    after = M.measure(handle(AFTER), [rec], generation=False)[0]
    r = M.record_scores(after, before)
    assert r["attribute"] == pytest.approx((math.e / Z_IS + math.e ** 3 / Z_IN) / 2) and len(after.attributes) == 2
    nll_after = (2 * math.log(V) + math.log(Z_CITY) - 5) / 3
    nll_before = (2 * math.log(V) + math.log(math.e ** 6 + V - 1)) / 3
    assert after.essence == pytest.approx(nll_after) and before.essence == pytest.approx(nll_before)
    assert r["essence"] == pytest.approx(nll_after - nll_before)
    assert M.record_scores(before, before)["essence"] == 0.0
    again = M.measure(handle(BEFORE), [rec], generation=False)[0]        # the unedited model once more: a no-op
    assert M.record_scores(again, before)["essence"] == 0.0
    assert M.Measured.from_json(json.loads(json.dumps(after.to_json()))) == after
    plain = M.record_scores(M.measure(handle(AFTER), [REC], generation=False)[0])
    assert "attribute" not in plain and "essence" not in plain          # a record without them: as before


# ----------------------------------------------------------------------------- the measurement's JSON

OLD = json.loads((Path(__file__).parent / "data" / "measured-1c37887.json").read_text(encoding="utf-8"))
OLD_KEYS = ["rewrite", "paraphrases", "neighbours", "symmetry", "generation"]


def _fixture_records(kind: str) -> list[Record]:
    """The records data/measured-1c37887.json was measured on (kneuron 1c37887's ``measure`` of the tiny gpt2
    and bert models, generation=True with seed 3 and generation=False): paraphrases, neighbours, a symmetry
    prompt with and without its true answer, a two-token object."""
    slot = " [Y] ." if kind == "masked" else ""
    sym = lambda true: Symmetry("P1376", "rome is the capital of" + slot, "france", true)   # noqa: E731
    return [Record(FACT, "rome", 0, 0, "the capital of france is" + slot,
                   paraphrases=(Prompt("the city in" + slot, 1), Prompt("the river is" + slot, 2)),
                   neighbours=(Neighbour("c2", "spain", "the capital of spain is" + slot, "madrid", 0, False),
                               Neighbour("c3", "x", "the capital city" + slot, "berlin", 0, False)),
                   generation=("the capital of france is",), symmetry=sym("italy")),
            Record(FACT, "rome", 0, 0, "the capital of france is" + slot, symmetry=sym(None)),
            Record(FACT, "paris city", 0, 0, "italy" + slot,
                   neighbours=(Neighbour("c3", "x", "was born in" + slot, "an italian city", 0, False),))]


def _ordered(x):
    """JSON with every dict's key order made part of the value (== alone ignores it)."""
    if isinstance(x, dict):
        return [(k, _ordered(v)) for k, v in x.items()]
    return [_ordered(v) for v in x] if isinstance(x, list) else x


def _close(a, b, rel: float = 1e-6) -> bool:
    """``a == b`` but for floats, equal to ``rel``: float32 kernels round differently on other CPUs (the
    fixture was made on another machine; its nll agree to ~1e-8 here), everything else exactly."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-9)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("family", ["gpt2", "bert"])
@pytest.mark.parametrize("gen", ["generation", "none"])
def test_measured_reads_and_writes_the_old_dicts(family, gen):
    """Measured.from_json reads what the old code's ``measure`` made, and to_json gives it back exactly: the
    same keys in the same order, the same floats (the editing bench's run directories resume unchanged)."""
    for d in OLD[family][gen]:
        m = M.Measured.from_json(d)
        assert _ordered(m.to_json()) == _ordered(d) and list(m.to_json()) == OLD_KEYS
        assert json.dumps(m.to_json(), ensure_ascii=False) == json.dumps(d, ensure_ascii=False)
        assert M.Measured.from_json(json.loads(json.dumps(m.to_json()))) == m
    first = M.Measured.from_json(OLD[family][gen][0])
    assert first.rewrite.new.nll == OLD[family][gen][0]["rewrite"]["new"]["nll"]
    assert [x.true.target for x in first.neighbours] == [x["true"]["target"] for x in OLD[family][gen][0]["neighbours"]]
    assert first.symmetry.true is not None and M.Measured.from_json(OLD[family][gen][1]).symmetry.true is None


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_measure_gives_the_old_codes_numbers(family, one_thread):
    """This code's ``measure`` of the fixture's records, as JSON, is the old code's, key order included;
    the texts sampled for GE too (a list; [] for a masked model; None when not sampled)."""
    h = tiny_handle(family, dtype=torch.float32)
    recs = _fixture_records(h.kind)
    for gen in ("generation", "none"):
        got = M.measure(h, recs, generation=gen == "generation", seed=3)
        assert all(isinstance(m, M.Measured) for m in got)
        assert _close([_ordered(m.to_json()) for m in got], [_ordered(d) for d in OLD[family][gen]])
        assert _close([M.record_scores(m) for m in got],
                      [M.record_scores(M.Measured.from_json(d)) for d in OLD[family][gen]])


def test_a_dict_that_is_not_a_measurement_does_not_read():
    d = OLD["gpt2"]["none"][0]
    for broken in ({k: v for k, v in d.items() if k != "rewrite"}, {**d, "neighbours": [{"true": d["rewrite"]["new"]}]},
                   {**d, "rewrite": {"new": {"nll": "x", "acc": 1.0, "argmax": [], "target": []}, "old": {}}}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            M.Measured.from_json(broken)


def test_ngram_entropy_is_romes():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert M.ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert M.ngram_entropy("a") == 0.0
    assert M.words("北京是, the capital's") == ["北", "京", "是", ",", "the", "capital", "'", "s"]


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_batched_scoring_equals_one_prompt_at_a_time(family, monkeypatch, one_thread):
    h = tiny_handle(family)
    slot = " [Y] ." if h.kind == "masked" else ""
    items = [("the capital of france is" + slot, "paris"), ("italy" + slot, "rome city"),
             ("the language spoken in spain is a" + slot, "spanish"), ("was born in" + slot, "an italian city")]
    monkeypatch.setattr(M, "LOGIT_BUDGET", 3 * 10 * V)          # several passes
    got = M.score(h, items)
    for (p, o), s in zip(items, got):
        a = answer_prob(h, p, o)
        assert s.nll == pytest.approx(-a.logp / len(a.target_ids), rel=1e-6)
        assert s.target == a.target_ids


def test_generation_is_seeded_and_bounded(one_thread):
    h = tiny_handle("gpt2", dtype=torch.float32)
    a = M.generate(h, ["the capital of france is"], seed=1, length=12)
    assert a == M.generate(h, ["the capital of france is"], seed=1, length=12)
    assert len(TOK(a[0])["input_ids"]) <= 12 and a[0].startswith("the capital of france is")
    assert M.generate(tiny_handle("bert"), ["x"]) == []
