"""kneuron.models.targets: prompts and gold answer tokens (causal and masked, BPE with and without BOS,
WordPiece, Chinese), the context check; with tiny tokenizers built offline."""
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from kneuron.facts import Fact
from kneuron.facts.templates import QueryError, queries_for
from kneuron.models.targets import Encoded, encode

# "Dodoma" is not in the training text, so it is split into several tokens; the Chinese
# characters are trained apart (comma-separated) so that each one becomes one token.
SENTENCES = [
    "The capital of France is Paris.", "The capital of Italy is Rome.", "Paris is in France.",
    "Rome is in Italy.", "The native language of Dante is Italian.", "People in Rome speak Italian.",
    "The capital of Tanzania is in Africa.", "The capital of Qatar is Doha.", "We met Dora in Oman.",
    "Berlin is the capital of Germany.", "法,国,的,首,都,是,巴,黎,意,大,利,罗,马。",
] * 20

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "capital", "of", "france", "is",
              "paris", "tanzania", "dod", "##oma", "italian", ".", "(", "法", "国", "的", "首", "都",
              "是", "巴", "黎", "。"]


@pytest.fixture(scope="module")
def bpe():
    """GPT-2 style byte-level BPE, no BOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def bpe_bos(bpe):
    """Same BPE, but the tokenizer prepends a BOS token (Llama style)."""
    tok = Tokenizer.from_str(bpe.backend_tokenizer.to_str())
    bos = bpe.bos_token_id
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("bert") / "vocab.txt"
    p.write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def bert(vocab_file):
    """WordPiece BERT tokenizer (uncased) from a local vocab.txt; transformers 5 reads it via from_pretrained."""
    tok = BertTokenizerFast.from_pretrained(str(vocab_file.parent))
    assert tok.is_fast and tok.convert_tokens_to_ids("##oma") == BERT_VOCAB.index("##oma")
    return tok


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# --- causal -------------------------------------------------------------------------------

def test_causal_leading_space_in_target_is_irrelevant(bpe):
    a = encode(bpe, "causal", "The capital of France is", " Paris")
    b = encode(bpe, "causal", "The capital of France is", "Paris")
    c = encode(bpe, "causal", "The capital of France is ", "Paris")
    assert a == b == c
    assert bpe.convert_ids_to_tokens(a.target_ids) == ["ĠParis"]  # the space belongs to the answer
    prompt = ids(bpe, "The capital of France is")
    assert a.input_ids == prompt and a.positions == [len(prompt) - 1]


def test_causal_multi_token_teacher_forcing(bpe):
    prompt = ids(bpe, "The capital of Tanzania is")
    e = encode(bpe, "causal", "The capital of Tanzania is", "Dodoma")
    n = len(e.target_ids)
    assert n >= 3, bpe.convert_ids_to_tokens(e.target_ids)  # precondition: answer is split
    assert e.target_ids == ids(bpe, "The capital of Tanzania is Dodoma")[len(prompt):]
    assert bpe.decode(e.target_ids) == " Dodoma"
    assert e.input_ids == prompt + e.target_ids[:-1]  # gold prefix, last answer token not input
    assert e.positions == list(range(len(prompt) - 1, len(prompt) - 1 + n))
    for k in range(n - 1):  # token after position k is answer token k
        assert e.input_ids[e.positions[k] + 1] == e.target_ids[k]
    assert e.positions[-1] == len(e.input_ids) - 1


def test_causal_with_bos(bpe, bpe_bos):
    plain = encode(bpe, "causal", "The capital of Tanzania is", "Dodoma")
    e = encode(bpe_bos, "causal", "The capital of Tanzania is", "Dodoma")
    assert e.input_ids == [bpe_bos.bos_token_id] + plain.input_ids
    assert e.positions == [p + 1 for p in plain.positions]
    assert e.target_ids == plain.target_ids and bpe_bos.bos_token_id not in e.target_ids


def test_causal_chinese_gets_no_space(bpe):
    e = encode(bpe, "causal", "法国的首都是", "巴黎")
    assert bpe.decode(e.input_ids + e.target_ids[-1:]) == "法国的首都是巴黎"
    assert bpe.decode(e.target_ids) == "巴黎"
    assert e.input_ids[: len(ids(bpe, "法国的首都是"))] == ids(bpe, "法国的首都是")


def test_causal_no_space_after_opening_bracket(bpe):
    e = encode(bpe, "causal", "The capital of France is (", "Paris")
    assert bpe.decode(e.input_ids + e.target_ids[-1:]) == "The capital of France is (Paris"


def test_causal_empty_prompt(bpe):
    with pytest.raises(QueryError, match="empty prompt"):
        encode(bpe, "causal", "  ", "Paris")


def test_unknown_kind(bpe):
    with pytest.raises(ValueError, match="unknown model kind"):
        encode(bpe, "seq2seq", "The capital of France is", "Paris")


# --- masked -------------------------------------------------------------------------------

def test_masked_multi_wordpiece(bert):
    e = encode(bert, "masked", "The capital of Tanzania is [Y].", "Dodoma")
    toks = bert.convert_ids_to_tokens(e.input_ids)
    assert toks == ["[CLS]", "the", "capital", "of", "tanzania", "is", "[MASK]", "[MASK]", ".", "[SEP]"]
    assert e.positions == [6, 7]
    assert bert.convert_ids_to_tokens(e.target_ids) == ["dod", "##oma"]
    assert bert.decode(e.target_ids) == "dodoma"
    assert not {bert.cls_token_id, bert.sep_token_id, bert.mask_token_id} & set(e.target_ids)
    # the tokenizer's own mask string works as the mark, and target spacing does not matter
    assert encode(bert, "masked", "The capital of Tanzania is [MASK].", " Dodoma") == e


def test_masked_answer_first(bert):
    e = encode(bert, "masked", "[Y] is the capital of France.", "Paris")
    assert e.positions == [1] and bert.convert_ids_to_tokens(e.target_ids) == ["paris"]
    assert bert.convert_ids_to_tokens(e.input_ids)[:3] == ["[CLS]", "[MASK]", "is"]


def test_masked_chinese(bert):
    e = encode(bert, "masked", "法国的首都是[Y]。", "巴黎")
    toks = bert.convert_ids_to_tokens(e.input_ids)
    assert toks == ["[CLS]", "法", "国", "的", "首", "都", "是", "[MASK]", "[MASK]", "。", "[SEP]"]
    assert e.positions == [7, 8] and bert.convert_ids_to_tokens(e.target_ids) == ["巴", "黎"]


def test_masked_mark_count(bert):
    for prompt in ["The capital of France is Paris.", "[Y] is [Y].", "[Y] is [MASK]."]:
        with pytest.raises(QueryError, match="exactly one answer mark"):
            encode(bert, "masked", prompt, "Paris")


def test_masked_answer_tokens_are_taken_in_context(bert):
    e = encode(bert, "masked", "The capital of Tanzania is Dod[Y].", "oma")  # no space before [Y]
    assert bert.convert_ids_to_tokens(e.target_ids) == ["##oma"] and e.positions == [7]
    assert bert.convert_ids_to_tokens(e.input_ids)[6] == "dod"


def test_masked_answer_merged_with_prompt(bert):
    # "isparis" is one unknown word: its single token covers prompt and answer characters
    with pytest.raises(QueryError, match="merges the answer 'Paris' with the prompt"):
        encode(bert, "masked", "The capital of France is[Y].", "Paris")


def test_unencodable_answer(bert):
    with pytest.raises(QueryError, match=r"answer 'Ωμέγα' cannot be encoded by this tokenizer"):
        encode(bert, "masked", "The capital of France is [Y].", "Ωμέγα")


def test_slow_tokenizer_fallback_matches_fast(bert, vocab_file):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy(vocab_file=str(vocab_file))
    assert not slow.is_fast
    for prompt, answer in [("The capital of Tanzania is [Y].", "Dodoma"), ("法国的首都是[Y]。", "巴黎"),
                           ("[Y] is the capital of France.", "Paris")]:
        assert encode(slow, "masked", prompt, answer) == encode(bert, "masked", prompt, answer)
    assert encode(slow, "causal", "The capital of Tanzania is", "Dodoma") == \
        encode(bert, "causal", "The capital of Tanzania is", "Dodoma")
    with pytest.raises(QueryError, match="cannot be encoded"):
        encode(slow, "masked", "The capital of France is [Y].", "Ωμέγα")


# --- queries ------------------------------------------------------------------------------

FACT = Fact("P36-0001", "P36", "en", "France", "Paris",
            ("[Y] is the capital of [X].", "The capital of [X] is [Y] .", "[X]'s capital: [Y]"))


def test_queries_causal_rejects_mid_sentence_y():
    with pytest.raises(QueryError) as ei:
        queries_for(FACT, "causal")
    msg = str(ei.value)
    assert "P36-0001" in msg and "(en)" in msg and "template 0" in msg and "[Y] must end the template" in msg
    qs = queries_for(FACT, "causal", skip_invalid=True)
    assert [(q.template_index, q.prompt) for q in qs] == [(1, "The capital of France is"),
                                                          (2, "France's capital:")]
    assert all((q.fact_id, q.lang, q.relation, q.target) == ("P36-0001", "en", "P36", "Paris") for q in qs)


def test_queries_masked_keep_all_templates(bert):
    qs = queries_for(FACT, "masked")
    assert [q.prompt for q in qs] == ["[Y] is the capital of France.", "The capital of France is [Y] .",
                                      "France's capital: [Y]"]
    e = encode(bert, "masked", qs[0].prompt, qs[0].target)
    assert e.positions == [1] and bert.convert_ids_to_tokens(e.target_ids) == ["paris"]


def test_queries_chinese_causal(bpe):
    fact = Fact("P36-0001", "P36", "zh", "法国", "巴黎", ("[X]的首都是[Y]。",))
    (q,) = queries_for(fact, "causal")
    assert q.prompt == "法国的首都是"
    e = encode(bpe, "causal", q.prompt, q.target)
    assert isinstance(e, Encoded) and bpe.decode(e.target_ids) == "巴黎"


# --- the model's context -----------------------------------------------------------------------

def test_context_check_counts_the_model_input_with_bos_and_answer(bpe, bpe_bos):
    from kneuron.models.targets import check_context
    plain = encode(bpe, "causal", "The capital of Tanzania is", "Dodoma")
    e = encode(bpe_bos, "causal", "The capital of Tanzania is", "Dodoma")
    n = len(plain.input_ids) + 1                      # the BOS counts: it takes a position
    assert len(plain.target_ids) > 1 and n == len(e.input_ids)
    check_context(e, n)
    check_context(e, None)                            # unknown context: no check
    with pytest.raises(QueryError, match=rf"^the prompt with its answer is {n} tokens, more than the model's "
                                         rf"context of {n - 1} tokens$"):
        check_context(e, n - 1)
