"""What the model predicts, and how likely it finds a gold answer (teacher forcing)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kneuron.intervene import answer_positions
from kneuron.models.load import ModelHandle
from kneuron.facts.templates import QueryError
from kneuron.models.targets import check_context, encode


@dataclass
class AnswerScore:
    prob: float                # product over the answer's tokens
    token_probs: list[float]
    target_ids: list[int]
    logp: float = 0.0          # log prob (no underflow for unlikely answers)
    greedy: bool = False       # every answer token is the model's top choice: it would say this answer


def answer_prob(handle: ModelHandle, prompt: str, target: str) -> AnswerScore:
    """p(target | prompt) in one forward pass; interventions active around the call apply at the
    answer positions."""
    enc = encode(handle.tokenizer, handle.kind, prompt, target)
    check_context(enc, handle.max_positions)
    ids = torch.tensor([enc.input_ids], device=handle.device)
    with answer_positions(enc.positions), torch.no_grad():
        logits = handle.model(input_ids=ids).logits[0, enc.positions].float()
    tgt = torch.tensor(enc.target_ids, device=logits.device)
    logp = torch.log_softmax(logits, -1)[torch.arange(len(enc.target_ids)), tgt]
    return AnswerScore(float(logp.sum().exp()), logp.exp().tolist(), list(enc.target_ids), float(logp.sum()),
                       bool((logits.argmax(-1) == tgt).all()))


def predict(handle: ModelHandle, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """Top-k next tokens after ``prompt`` (causal), or at its single ``[Y]``/mask (masked)."""
    tok = handle.tokenizer
    if handle.kind == "masked":
        text = prompt.replace("[Y]", tok.mask_token)
        ids = tok(text)["input_ids"]
        where = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
        if len(where) != 1:
            raise QueryError(f"a masked-model prompt needs exactly one [Y] or {tok.mask_token}; found {len(where)}")
        pos = where[0]
    else:
        if not prompt.strip():
            raise QueryError("the prompt is empty")
        ids = tok(prompt.rstrip())["input_ids"]
        pos = len(ids) - 1
    with answer_positions([pos]), torch.no_grad():
        logits = handle.model(input_ids=torch.tensor([ids], device=handle.device)).logits[0, pos].float()
    p, i = logits.softmax(-1).topk(max(1, min(k, logits.shape[-1])))
    return [(tok.decode([int(j)]), float(q)) for q, j in zip(p, i)]
