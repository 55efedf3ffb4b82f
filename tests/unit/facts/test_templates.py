"""Fact.queries / Fact.first_query: the one definition of a fact's prompts a model can use."""
import pytest

from kneuron.facts import Fact, QueryError, queries_for

FACT = Fact("P36-0001", "P36", "en", "France", "Paris",
            ("[Y] is the capital of [X].", "The capital of [X] is [Y] .", "[X]'s capital: [Y]"),
            source="facts.jsonl:7")
BAD_ONLY = Fact("P36-0002", "P36", "en", "Italy", "Rome", ("[Y] is the capital of [X].", "[Y]."),
                source="facts.jsonl:9")


def test_causal_queries_skip_the_templates_a_causal_model_cannot_use():
    qs = FACT.queries("causal", skip_invalid=True)
    assert [(q.template_index, q.prompt, q.target) for q in qs] == [(1, "The capital of France is", "Paris"),
                                                                   (2, "France's capital:", "Paris")]
    assert qs == queries_for(FACT, "causal", skip_invalid=True)
    assert FACT.first_query("causal") == qs[0]


def test_masked_queries_keep_every_template_with_its_mask():
    qs = FACT.queries("masked")
    assert [q.prompt for q in qs] == ["[Y] is the capital of France.", "The capital of France is [Y] .",
                                      "France's capital: [Y]"]
    assert FACT.first_query("masked").prompt == "[Y] is the capital of France."
    assert FACT.first_query("masked").template_index == 0


def test_strict_causal_queries_name_the_file_line_field_and_template():
    with pytest.raises(QueryError) as ei:
        FACT.queries("causal")
    msg = str(ei.value)
    assert msg.startswith('facts.jsonl:7: field "templates": fact P36-0001 (en) template 0: ')
    assert "[Y] must end the template" in msg and "\n" not in msg


@pytest.mark.parametrize("call", [lambda f: f.first_query("causal"),
                                  lambda f: f.queries("causal", skip_invalid=True)])
def test_no_usable_template_is_one_line_that_says_why(call):
    with pytest.raises(QueryError) as ei:
        call(BAD_ONLY)
    msg = str(ei.value)
    assert msg.startswith('facts.jsonl:9: field "templates": no template usable by a causal model (')
    assert "template 0: for causal models [Y] must end the template" in msg and "\n" not in msg


def test_a_fact_without_a_source_is_named_by_id_and_language():
    f = Fact("P1-1", "P1", "zh", "法国", "巴黎", ("[Y]是[X]的首都。",))
    with pytest.raises(QueryError, match=r"^fact P1-1 \(zh\): field \"templates\": no template usable"):
        f.first_query("causal")
    assert f.first_query("masked").prompt == "[Y]是法国的首都。"


def test_unknown_kind_is_refused_in_one_line():
    with pytest.raises(QueryError, match=r'field "templates": unknown model kind \'seq2seq\''):
        FACT.queries("seq2seq")
    with pytest.raises(QueryError, match="unknown model kind"):
        FACT.first_query("seq2seq")
