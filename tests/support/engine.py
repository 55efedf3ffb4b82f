"""What the engine tests (tests/unit/attribution/) share: tiny models of the families the architecture table
declares beyond those support.tiny builds, prompts of several lengths per kind, random rows of activations."""
import torch
import transformers as T

from support.tiny import FAMILIES, H, HEADS, I, NL, V, tiny_handle, word_tokenizer


# tiny models of the table's families tests/support/tiny.py does not build (never downloaded)
EXTRA = {
    "camembert": ("masked", lambda: T.CamembertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I, pad_token_id=0)),
    "electra": ("masked", lambda: T.ElectraConfig(vocab_size=V, embedding_size=H, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "distilbert": ("masked", lambda: T.DistilBertConfig(vocab_size=V, dim=H, n_layers=NL, n_heads=HEADS, hidden_dim=I)),
    "gpt_neo": ("causal", lambda: T.GPTNeoConfig(vocab_size=V, hidden_size=H, num_layers=NL, num_heads=HEADS, intermediate_size=I, attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=8)),
    "falcon": ("causal", lambda: T.FalconConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, alibi=True)),
    "phi": ("causal", lambda: T.PhiConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "qwen3": ("causal", lambda: T.Qwen3Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I, head_dim=8)),
    "gemma2": ("causal", lambda: T.Gemma2Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I, head_dim=8)),
    "olmo": ("causal", lambda: T.OlmoConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "olmo2": ("causal", lambda: T.Olmo2Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
}


def any_handle(family):
    """A tiny random handle of ``family``: support.tiny's, or one of EXTRA's (float64, seed 0)."""
    if family in FAMILIES:
        return tiny_handle(family)
    from kneuron.models import from_model
    kind, make = EXTRA[family]
    torch.manual_seed(0)
    cfg = make()
    cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = 0, 5, 6
    cls = T.AutoModelForMaskedLM if kind == "masked" else T.AutoModelForCausalLM
    return from_model(cls.from_config(cfg).to(torch.float64).eval(), word_tokenizer(kind), kind=kind,
                      name=f"tiny-{family}")


ITEMS = {"causal": [("the capital of france is", "paris rome"), ("italy", "rome"),
                    ("the language spoken in spain is", "spanish")],
         "masked": [("the capital of france is [Y] .", "paris rome"), ("[Y] italy", "rome"),
                    ("the language spoken in spain is [Y] .", "spanish")]}


def layer_rows(h, acts, per_layer=2, seed=0):
    """``per_layer`` rows for every layer: (layer of each row, the clean activations scaled by a seeded random
    factor in [0, 1))."""
    g = torch.Generator().manual_seed(seed)
    layers = torch.arange(h.n_layers).repeat_interleave(per_layer)
    scale = torch.rand(len(layers), 1, generator=g, dtype=acts.dtype)
    return layers, acts[layers] * scale

