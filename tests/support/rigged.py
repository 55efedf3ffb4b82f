"""A tiny model whose gold-answer ranks a test sets: its output layer is a bias alone, so every position
predicts the same ranking (the known-facts rank rule's tests, ``kneuron.organisms.known``)."""
from __future__ import annotations

import torch

from support.tiny import tiny_handle


def rigged(family: str, ranks: dict[str, int]):
    """``tiny_handle(family)`` with an output layer of zero weights and a bias under which each word of
    ``ranks`` has its given rank (1 = top) and the other tokens fill the ranks left; logit of rank r: -(r - 1)."""
    h = tiny_handle(family)
    V = h.model.get_output_embeddings().weight.shape[0]
    vocab = h.tokenizer.get_vocab()
    fixed = {vocab[w]: r for w, r in ranks.items()}
    rest = iter(i for i in range(V) if i not in fixed)
    order = [None] * V                                   # order[r - 1]: the token of rank r
    for i, r in fixed.items():
        order[r - 1] = i
    order = [i if i is not None else next(rest) for i in order]
    head = torch.nn.Linear(h.model.config.hidden_size, V, bias=True, dtype=h.dtype)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(-torch.arange(V, dtype=h.dtype)[torch.argsort(torch.tensor(order))])
    h.model.set_output_embeddings(head)
    return h


def p_of(rank: int, V: int) -> float:
    """The probability of the token of rank ``rank`` under ``rigged``'s bias over ``V`` tokens."""
    return float(torch.softmax(-torch.arange(V, dtype=torch.float64), 0)[rank - 1])
