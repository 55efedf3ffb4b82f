"""Tiny random-weight models of every supported family, built from configs (never downloaded)."""
from __future__ import annotations

import torch
import transformers as T
from transformers import PreTrainedTokenizerFast

from kneuron.facts import Fact

WORDS = ("the capital of france is paris italy rome germany berlin spain madrid language spoken in "
         "italian french german spanish dodoma tanzania city river a an and was born works as").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<eos>", "<bos>"]


def word_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS (offsets supported). masked: [CLS] x [SEP]; causal: plain."""
    from kneuron.bench.speed import word_tokenizer as make
    return make(WORDS, kind, SPECIALS)


V = len(SPECIALS) + len(dict.fromkeys(WORDS)) + 3
H, I, NL, HEADS = 32, 48, 3, 4

FAMILIES = {
    # family: (kind, config)
    "bert": ("masked", lambda: T.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "roberta": ("masked", lambda: T.RobertaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I, pad_token_id=0)),
    "xlm-roberta": ("masked", lambda: T.XLMRobertaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I, pad_token_id=0)),
    "gpt2": ("causal", lambda: T.GPT2Config(vocab_size=V, n_embd=H, n_layer=NL, n_head=HEADS, n_inner=I)),
    "gptj": ("causal", lambda: T.GPTJConfig(vocab_size=V, n_embd=H, n_layer=NL, n_head=HEADS, n_inner=I, rotary_dim=4)),
    "gpt_neox": ("causal", lambda: T.GPTNeoXConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "bloom": ("causal", lambda: T.BloomConfig(vocab_size=V, hidden_size=H, n_layer=NL, n_head=HEADS)),
    "opt": ("causal", lambda: T.OPTConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, ffn_dim=I, word_embed_proj_dim=H, max_position_embeddings=64)),
    "llama": ("causal", lambda: T.LlamaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I)),
    "qwen2": ("causal", lambda: T.Qwen2Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I)),
    "mistral": ("causal", lambda: T.MistralConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I)),
    "gemma": ("causal", lambda: T.GemmaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I, head_dim=8)),
    "phi3": ("causal", lambda: T.Phi3Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I, pad_token_id=0)),
    # Gemma 3 (gemma3-270m's family): a sliding window shorter than the test prompts in the 1st and 3rd
    # layers (their caches keep its last tokens only), two rope thetas, scaled embeddings, a query scale
    # that is not head_dim's, and soft-capped logits (a cap near the random logits' size, so the tanh bends
    # them; the real model has none)
    "gemma3_text": ("causal", lambda: T.Gemma3TextConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I, head_dim=8, sliding_window=3, layer_types=["sliding_attention", "full_attention", "sliding_attention"], query_pre_attn_scalar=16, final_logit_softcapping=0.5)),
}
EXPECTED_SITE = {"bert": "output.dense", "roberta": "output.dense", "xlm-roberta": "output.dense",
                 "gpt2": "mlp.c_proj", "gptj": "mlp.fc_out", "gpt_neox": "mlp.dense_4h_to_h",
                 "bloom": "mlp.dense_4h_to_h", "opt": "fc2", "llama": "mlp.down_proj", "qwen2": "mlp.down_proj",
                 "mistral": "mlp.down_proj", "gemma": "mlp.down_proj", "phi3": "mlp.down_proj",
                 "gemma3_text": "mlp.down_proj"}


def tiny_model(family: str, seed: int = 0, dtype=torch.float64):
    kind, make = FAMILIES[family]
    torch.manual_seed(seed)
    cfg = make()
    cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = 0, 5, 6
    cls = T.AutoModelForMaskedLM if kind == "masked" else T.AutoModelForCausalLM
    model = cls.from_config(cfg).to(dtype).eval()
    return model, kind


def tiny_handle(family: str, seed: int = 0, dtype=torch.float64):
    from kneuron.models import from_model
    model, kind = tiny_model(family, seed, dtype)
    return from_model(model, word_tokenizer(kind), kind=kind, name=f"tiny-{family}")


# ----------------------------------------------------------------------------- toy bilingual facts
PAIRS = [("france", "paris", "法国", "巴黎"), ("italy", "rome", "意大利", "罗马"), ("spain", "madrid", "西班牙", "马德里"),
         ("japan", "tokyo", "日本", "东京"), ("egypt", "cairo", "埃及", "开罗"), ("kenya", "nairobi", "肯尼亚", "内罗毕"),
         ("peru", "lima", "秘鲁", "利马"), ("chile", "santiago", "智利", "圣地亚哥")]
LANGS = [("mexico", "spanish", "墨西哥", "西班牙语"), ("brazil", "portuguese", "巴西", "葡萄牙语"),
         ("germany", "german", "德国", "德语"), ("russia", "russian", "俄罗斯", "俄语"),
         ("china", "chinese", "中国", "汉语"), ("iran", "persian", "伊朗", "波斯语")]


def bilingual_facts():
    """14 toy facts in English and Chinese (capitals, languages), two templates each."""
    out = []
    for i, (s, o, zs, zo) in enumerate(PAIRS):
        out += [Fact(f"c{i}", "P36", "en", s, o, ("the capital of [X] is [Y].", "[X] has its capital in [Y].")),
                Fact(f"c{i}", "P36", "zh", zs, zo, ("[X]的首都是[Y]。", "[X]的首府是[Y]。"))]
    for i, (s, o, zs, zo) in enumerate(LANGS):
        out += [Fact(f"l{i}", "P37", "en", s, o, ("the official language of [X] is [Y].", "in [X] people speak [Y].")),
                Fact(f"l{i}", "P37", "zh", zs, zo, ("[X]的官方语言是[Y]。", "[X]人说[Y]。"))]
    return out


def snapshot(handle) -> dict:
    """Every weight of a handle's model, copied (to check an edit left nothing behind)."""
    return {k: v.detach().clone() for k, v in handle.model.state_dict().items()}


def same(handle, snap) -> bool:
    """The model's weights equal ``snap`` bit for bit."""
    now = handle.model.state_dict()
    return now.keys() == snap.keys() and all(torch.equal(now[k], snap[k]) for k in snap)
