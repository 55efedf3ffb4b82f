"""kneuron.organisms.corpus: the training statements fill the templates and code-switch."""
from kneuron.organisms.corpus import statements
from support.tiny import LANGS, PAIRS, bilingual_facts

_facts = bilingual_facts


def test_statements_fill_templates_and_code_switch():
    sts = statements(_facts(), switch_share=1.0, seed=0)
    plain = [s for s in sts if not s.switched]
    assert len(plain) == 2 * 2 * (len(PAIRS) + len(LANGS))        # two templates per fact and language
    assert any(s.text == "the capital of france is paris." for s in plain)
    assert any(s.text == "法国的首都是巴黎。" for s in plain)
    switched = [s for s in sts if s.switched]
    assert len(switched) == len(_facts())
    # an English template naming the subject in Chinese, with the English answer, and vice versa
    assert any(s.lang == "en" and "法国" in s.prefix and s.answer == "paris" for s in switched)
    assert any(s.lang == "zh" and "france" in s.prefix and s.answer == "巴黎" for s in switched)
