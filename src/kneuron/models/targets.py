"""Prompts and gold answer tokens for facts, for masked (BERT-like) and causal (GPT-like) models.

A Query is one prompt of one fact. encode() turns (prompt, answer) into model input ids,
the gold answer token ids and, for each answer token, the position whose logits predict
it (where neurons are read). The answer tokens are taken *in context*: the full text is
tokenized once and the tokens covering the answer's characters are the targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..facts.templates import KINDS, QueryError, check_kind, is_cjk, separator

@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]  # one full model input, special tokens included
    positions: list[int]  # for answer token k: the position whose logits predict it
    target_ids: list[int]  # gold answer tokens, len == len(positions)


def _split_masked(tokenizer: Any, prompt: str) -> tuple[str, str]:
    """Split a masked prompt around its single mark ("[Y]" or the mask token)."""
    marks = ["[Y]"] + [m for m in [getattr(tokenizer, "mask_token", None)] if m and m != "[Y]"]
    found = [(prompt.find(m), m) for m in marks if m in prompt]
    count = sum(prompt.count(m) for m in marks)
    if count != 1:
        raise QueryError(f"masked prompt needs exactly one answer mark {' or '.join(marks)}, found {count}: {prompt!r}")
    at, m = found[0]
    return prompt[:at], prompt[at + len(m):]


def _answer_tokens(tokenizer: Any, left: str, answer: str, right: str) -> tuple[list[int], int, int]:
    """Tokenize left+answer+right; return ids and the [start, end) token range of the answer."""
    text = left + answer + right
    a0, a1 = len(left), len(left) + len(answer)
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, offs, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    hits = [i for i, (s, e) in enumerate(offs) if not special[i] and max(s, a0) < min(e, a1)]
    if not hits:
        raise QueryError(f"answer {answer.strip()!r} cannot be encoded by this tokenizer (no tokens)")
    for i in hits:
        s, e = offs[i]
        if text[s:a0].strip() or text[a1:e].strip():
            raise QueryError(
                f"the tokenizer merges the answer {answer.strip()!r} with the prompt: "
                f"token {tokenizer.convert_ids_to_tokens(ids[i])!r} covers {text[s:e]!r} in {text!r}"
            )
    if hits != list(range(hits[0], hits[-1] + 1)):
        raise QueryError(f"answer {answer.strip()!r} is not a contiguous run of tokens in {text!r}")
    return ids, hits[0], hits[-1] + 1


def _answer_tokens_slow(tokenizer: Any, left: str, answer: str, right: str) -> tuple[list[int], int, int]:
    """Fallback without offsets: encode the pieces separately, then add the special tokens."""
    def plain(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False)["input_ids"] if s else []

    ctx_text = left.rstrip()
    ctx, ans, rest = plain(ctx_text), plain(left[len(ctx_text):] + answer), plain(right)
    if not ans:
        raise QueryError(f"answer {answer.strip()!r} cannot be encoded by this tokenizer (no tokens)")
    whole = left + answer + right
    full, bare = tokenizer(whole)["input_ids"], plain(whole)
    pre = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), 0)
    prefix, suffix = full[:pre], full[pre + len(bare):]
    return prefix + ctx + ans + rest + suffix, len(prefix) + len(ctx), len(prefix) + len(ctx) + len(ans)


def encode(tokenizer: Any, kind: str, prompt: str, target: str) -> Encoded:
    """Model input, answer positions and gold answer ids for one prompt and its answer."""
    check_kind(kind)
    answer = target.strip()
    if not answer:
        raise QueryError("empty answer")
    if kind == "causal":
        left, right = prompt.rstrip(), ""
        if not left:
            raise QueryError("empty prompt: a causal model needs text before the answer")
        left += separator(left, answer)
    else:
        left, right = _split_masked(tokenizer, prompt)
        if tokenizer.mask_token_id is None:
            raise QueryError("masked model kind needs a tokenizer with a mask token")
    fast = getattr(tokenizer, "is_fast", False)
    ids, a, b = (_answer_tokens if fast else _answer_tokens_slow)(tokenizer, left, answer, right)
    target_ids = list(ids[a:b])
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in target_ids:
        raise QueryError(
            f"answer {answer!r} cannot be encoded by this tokenizer "
            f"(it maps to the unknown token {tokenizer.unk_token!r})"
        )
    if kind == "causal":
        if a == 0:
            raise QueryError(f"prompt {prompt!r} gives no tokens before the answer")
        return Encoded(list(ids[:a]) + target_ids[:-1], list(range(a - 1, b - 1)), target_ids)
    masked = list(ids)
    masked[a:b] = [tokenizer.mask_token_id] * (b - a)
    return Encoded(masked, list(range(a, b)), target_ids)


def check_context(enc: Encoded, limit: int | None) -> None:
    """QueryError (one line) when the model input (causal: the prompt and all but the last answer
    token; masked: the whole masked sentence; special tokens included) is longer than the model's
    context ``limit``; no check where the context is unknown (None)."""
    n = len(enc.input_ids)
    if limit is not None and n > limit:
        raise QueryError(f"the prompt with its answer is {n} tokens, more than the model's context of {limit} tokens")
