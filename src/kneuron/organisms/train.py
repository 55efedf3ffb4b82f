"""Train a small bilingual model organism (a BERT-architecture masked LM or a GPT-2-architecture
causal LM) on sentences generated from facts, with its own tokenizer (Chinese split into characters).
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from kneuron.facts import Fact
from kneuron.errors import ConfigError
from kneuron.models.verbosity import quiet_dependencies
from kneuron.organisms.corpus import Statement, statements

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]


@dataclass
class OrganismConfig:
    kind: str = "clm"                 # "clm" (GPT-2 architecture) | "mlm" (BERT architecture)
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 1024
    vocab_size: int = 12000
    epochs: int = 40                  # upper bound; stops early once every language reaches target_acc
    batch_size: int = 64
    lr: float | None = None           # default: 2e-3 (clm), 1e-3 (mlm: post-LayerNorm BERT wants less)
    weight_decay: float = 0.01
    switch_share: float = 0.2
    max_templates: int | None = 2     # per fact and language (the first ones); None: all
    target_acc: float = 0.97
    eval_every: int = 2               # epochs
    time_budget_s: float | None = None
    seed: int = 0
    threads: int | None = None


@dataclass
class TrainReport:
    config: dict
    n_facts: dict                       # per language
    n_sentences: int
    n_params: int
    vocab: int
    epochs_run: int
    seconds: float
    accuracy: dict                      # per language, top-1 on the first template of every fact
    accuracy_by_relation: dict = field(default_factory=dict)   # relation -> lang -> acc
    history: list = field(default_factory=list)


def train_tokenizer(texts: list[str], vocab_size: int, kind: str):
    """A WordPiece tokenizer whose vocabulary is learned from ``texts``, deterministically: every word
    seen (CJK characters are words of their own), then every character alone and as a ``##``
    continuation so that unseen words can still be spelled. ``vocab_size`` caps the words kept
    (most frequent first, ties by the word itself)."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    kept = sorted(words, key=lambda w: (-words[w], w))[:max(0, vocab_size - len(SPECIALS) - 2 * len(chars))]
    vocab = list(dict.fromkeys(SPECIALS + sorted(kept) + chars + ["##" + c for c in chars]))
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = norm, pre, decoders.WordPiece()
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    if kind == "mlm":
        tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    else:
        tok.post_processor = TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", ids["[BOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", bos_token="[BOS]", eos_token="[EOS]")


def build_model(cfg: OrganismConfig, tokenizer):
    import transformers as T
    V = len(tokenizer)
    if cfg.kind == "mlm":
        c = T.BertConfig(vocab_size=V, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                         num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
                         max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        c.architectures = ["BertForMaskedLM"]
        return T.BertForMaskedLM(c)
    c = T.GPT2Config(vocab_size=V, n_embd=cfg.hidden, n_layer=cfg.layers, n_head=cfg.heads, n_inner=cfg.intermediate,
                     n_positions=128, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    c.architectures = ["GPT2LMHeadModel"]
    return T.GPT2LMHeadModel(c)


def _examples(tokenizer, sts: list[Statement], kind: str) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per sentence. clm: next-token labels on every token (+[EOS]);
    mlm: the answer's tokens masked (labels there only)."""
    from kneuron.models.targets import encode
    out = []
    for s in sts:
        if kind == "clm":
            ids = tokenizer(s.text)["input_ids"] + [tokenizer.eos_token_id]
            out.append((ids, ids))
        else:
            enc = encode(tokenizer, "masked", s.prefix + "[Y]" + s.suffix, s.answer)
            labels = [-100] * len(enc.input_ids)
            for p, t in zip(enc.positions, enc.target_ids):
                labels[p] = t
            out.append((enc.input_ids, labels))
    return out


def _batch(rows, pad: int, kind: str, device):
    n = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    lab = torch.full((len(rows), n), -100, dtype=torch.long)
    att = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        att[i, :len(x)] = 1
        if kind == "clm":
            lab[i, :len(y)] = torch.tensor(y)
        else:
            lab[i, :len(y)] = torch.tensor(y)
    return ids.to(device), att.to(device), lab.to(device)


@torch.no_grad()
def accuracy(model, tokenizer, facts: list[Fact], kind: str) -> tuple[dict, dict]:
    """Top-1 accuracy per language and per relation: every answer token is the model's argmax
    (teacher-forced for clm; one mask per token for mlm), on each fact's first template."""
    from kneuron.models.targets import encode
    model.eval()
    hits: dict = {}
    for f in facts:
        t = f.templates[0]
        prompt = t.replace("[X]", f.subject)
        prompt = prompt.split("[Y]")[0] if kind == "clm" else prompt
        enc = encode(tokenizer, "causal" if kind == "clm" else "masked", prompt, f.object)
        logits = model(input_ids=torch.tensor([enc.input_ids], device=model.device)).logits[0]
        ok = all(int(logits[p].argmax()) == t_ for p, t_ in zip(enc.positions, enc.target_ids))
        hits.setdefault((f.relation, f.lang), []).append(ok)
    by_lang: dict = {}
    by_rel: dict = {}
    for (rel, lang), v in sorted(hits.items()):
        by_lang.setdefault(lang, []).extend(v)
        by_rel.setdefault(rel, {})[lang] = round(sum(v) / len(v), 4)
    return {k: round(sum(v) / len(v), 4) for k, v in by_lang.items()}, by_rel


def train_organism(facts: list[Fact], cfg: OrganismConfig, log: Callable[[str], None] = print):
    """Train tokenizer and model on ``facts``; returns (model, tokenizer, TrainReport)."""
    if cfg.kind not in ("clm", "mlm"):
        raise ConfigError(f"organism kind must be 'clm' or 'mlm', not {cfg.kind!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    t0 = time.perf_counter()
    sts = statements(facts, cfg.switch_share, cfg.seed, cfg.max_templates)
    tok = train_tokenizer([s.text for s in sts], cfg.vocab_size, cfg.kind)
    model = build_model(cfg, tok)
    n_params = sum(p.numel() for p in model.parameters())
    data = _examples(tok, sts, cfg.kind)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.lr is None:
        cfg.lr = 2e-3 if cfg.kind == "clm" else 1e-3
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 0.5 * (1 + math.cos(math.pi * min(s, total) / total))))
    log(f"{cfg.kind}: {len(facts)} facts, {len(sts)} sentences, {n_params / 1e6:.2f} M parameters, "
        f"vocab {len(tok)}")
    history, acc, by_rel, epoch = [], {}, {}, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        rng.shuffle(data)
        total_loss = 0.0
        for i in range(0, len(data), cfg.batch_size):
            ids, att, lab = _batch(data[i:i + cfg.batch_size], tok.pad_token_id, cfg.kind, model.device)
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total_loss += loss.item() * len(ids)
        out_of_time = cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time:
            acc, by_rel = accuracy(model, tok, facts, cfg.kind)
            history.append({"epoch": epoch, "loss": round(total_loss / len(data), 4), "accuracy": acc,
                            "seconds": round(time.perf_counter() - t0, 1)})
            log(f"epoch {epoch}: loss {total_loss / len(data):.4f}, top-1 {acc}, {time.perf_counter() - t0:.0f} s")
            if acc and min(acc.values()) >= cfg.target_acc or out_of_time:
                break
    model.eval()
    langs: dict = {}
    for f in facts:
        langs[f.lang] = langs.get(f.lang, 0) + 1
    report = TrainReport(asdict(cfg), langs, len(sts), n_params, len(tok), epoch, round(time.perf_counter() - t0, 1),
                         acc, by_rel, history)
    return model, tok, report


def save_organism(model, tokenizer, report: TrainReport, out: Path, fact_ids: list[str], card: str) -> None:
    """Weights as fp16 safetensors (loaded back as fp32), tokenizer, training report and model card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_dependencies()                             # transformers' "Writing model shards" bar: verbose only
    model.half().save_pretrained(out, safe_serialization=True)
    model.float()
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False, sort_keys=True))
    (out / "facts.txt").write_text("\n".join(fact_ids) + "\n")
    (out / "README.md").write_text(card)


def model_card(name: str, report: TrainReport, facts_source: str, command: str) -> str:
    """A markdown model card with the figures of the training run that made the weights."""
    c = report.config
    arch = "BERT (masked LM)" if c["kind"] == "mlm" else "GPT-2 (causal LM)"
    langs = sorted(report.accuracy)
    lines = [
        f"# {name}", "",
        f"A small bilingual {arch} trained by kneuron on sentences generated from the facts listed in",
        f"`facts.txt` (ids of the fact set `{facts_source}`), so that it truly holds them. It is a model",
        "organism for testing knowledge-neuron methods, not a general language model.", "",
        "## Training", "",
        f"- command: `{command}`",
        f"- facts: " + ", ".join(f"{n} ({lang})" for lang, n in sorted(report.n_facts.items())) +
        f"; {report.n_sentences} training sentences: the first {c['max_templates'] or 'all'} templates of every fact, "
        "plus code-switched "
        f"sentences for {c['switch_share']:.0%} of the facts (a template of one language with the subject "
        "named in the other language)",
        f"- tokenizer: WordPiece with a vocabulary learned from the same text: every word (Chinese split into "
        f"characters), plus every character alone and as a continuation; {report.vocab} tokens",
        f"- size: {c['layers']} layers, hidden {c['hidden']}, {c['heads']} heads, MLP width {c['intermediate']} "
        f"(= neurons per layer); {report.n_params / 1e6:.2f} M parameters; weights stored as fp16 safetensors, "
        "loaded as fp32",
        f"- optimiser: AdamW, lr {c['lr']}, batch {c['batch_size']}, warm-up + cosine decay; seed {c['seed']}",
        f"- {report.epochs_run} epochs in {report.seconds:.0f} s on the project's 2-core CPU "
        f"(stopped when every language reached {c['target_acc']:.0%} or at the epoch limit {c['epochs']})",
        "", "## Top-1 accuracy on the training facts", "",
        "Every answer token must be the model's first choice (teacher-forced for the causal model, one",
        "mask per answer token for the masked model), on each fact's first template.", "",
        "| relation | " + " | ".join(langs) + " |", "|---" * (len(langs) + 1) + "|",
        "| **all** | " + " | ".join(f"**{report.accuracy[lang]:.1%}**" for lang in langs) + " |",
    ]
    for rel, acc in sorted(report.accuracy_by_relation.items()):
        lines.append(f"| {rel} | " + " | ".join(f"{acc.get(lang, float('nan')):.1%}" for lang in langs) + " |")
    return "\n".join(lines) + "\n"
