"""attribute(handle, prompt, target, method=...) -> Attribution: a score for every neuron."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode
from kneuron.attribution.engine import Paths, Runner, clean_pass, integrate, make_problem, objective_values
from kneuron.attribution.methods import AMIG, IG
from kneuron.attribution.quadrature import RULES, nodes

METHODS = {"ig": IG, "amig": AMIG}


@dataclass
class Attribution:
    scores: torch.Tensor                 # [n_layers, n_neurons], float32, on the CPU
    prob: float                          # p(answer | prompt): product over the answer's tokens
    token_probs: list[float]
    target_ids: list[int]
    method: str
    params: dict = field(default_factory=dict)
    completeness: float | None = None    # sum_l |sum_j score - (F(a) - F(b_l))| / sum_l |F(a) - F(b_l)|
    delta: torch.Tensor | None = None    # [n_layers] F(a) - F(baseline), where completeness is defined
    prediction: tuple[str, float] = ("", 0.0)   # the model's own top token at the first answer position

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The k highest-scoring neurons as (layer, index, score)."""
        v, i = self.scores.flatten().topk(min(k, self.scores.numel()))
        n = self.scores.shape[1]
        return [(int(j) // n, int(j) % n, float(s)) for s, j in zip(v, i)]


def default_batch_size(handle: ModelHandle, seq_len: int, prefix_cache: bool) -> int:
    """Rows per batch. Causal single-token rows: as many as keep the [rows, vocabulary] logits near
    32M numbers (CPU; 128M on a GPU), at most 640 (CPU) or 2,048 (GPU) — rows of every layer share one
    batch, each block computing only the rows that reached it, so larger is faster (measured on
    smollm2-135m and GPT-2 base, CPU: 640 rows 1.5 s / fact, 160 rows 1.65 s). Full-sequence rows
    (masked models): ~450 tokens per batch on a CPU (measured on BERT base), 8,192 on a GPU.
    Out-of-memory backs off by halving."""
    cuda = handle.device.type == "cuda"
    if handle.kind == "causal" and prefix_cache:
        vocab = getattr(getattr(handle.model, "config", None), "vocab_size", None) or 50_000
        return max(16, min(2048 if cuda else 640, (128 if cuda else 32) * 2**20 // vocab))
    return max(1, (8192 if cuda else 448) // max(1, seq_len))


def make_method(method: str | IG, **options) -> IG:
    if isinstance(method, IG):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "ig" and options:
        raise ValueError(f"ig takes no options ({', '.join(options)} given)")
    return METHODS[method](**options)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(handle: ModelHandle, precision: str = "fp32"):
    """The model's matrix products in ``precision`` (fp32: as loaded; bf16/fp16: autocast, with
    softmax and the gradient sums kept in fp32 and fp64)."""
    import contextlib
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=handle.device.type, dtype=PRECISIONS[precision])


def attribute(handle: ModelHandle, prompt: str, target: str, method: str | IG = "ig", steps: int = 20,
              objective: str = "prob", rule: str = "left", batch_size: int | None = None,
              prefix_cache: bool = True, replay: bool = True, progress=None, precision: str = "fp32",
              **options) -> Attribution:
    """Integrated-gradients score of every neuron for the gold ``target`` after ``prompt``.

    Causal models: ``prompt`` is the text before the answer. Masked models: ``prompt`` marks the
    answer's place with ``[Y]`` or the mask token (expanded to one mask per answer token).
    Multi-token answers: sum of the per-token attributions, each token scored after the gold prefix.
    ``options`` go to the method (amig: ``paths``, ``prefactor_kind``, ``normalize``);
    ``precision``: fp32 (default), or bf16 / fp16 autocast (GPU speed). See ``attribute_many`` for
    several prompts in one batch.
    """
    return attribute_many(handle, [(prompt, target)], method, steps, objective, rule, batch_size, prefix_cache,
                          replay, progress, precision, **options)[0]


def attribute_many(handle: ModelHandle, items: list[tuple[str, str]], method: str | IG = "ig", steps: int = 20,
                   objective: str = "prob", rule: str = "left", batch_size: int | None = None,
                   prefix_cache: bool = True, replay: bool = True, progress=None, precision: str = "fp32",
                   share: bool = True, **options) -> list[Attribution]:
    """``attribute`` for several (prompt, target) pairs at once: the rows of all of them (every answer
    token, layer, path and step) go through the model in shared batches (``share``; padded and masked,
    where the model's check allows it), which keeps a GPU busy with small models or short prompts.
    The results equal one ``attribute`` call per pair."""
    with autocast(handle, precision):
        out = _attribute_many(handle, items, method, steps, objective, rule, batch_size, prefix_cache, replay,
                              progress, share, **options)
    for a in out:
        if precision != "fp32":
            a.params["precision"] = precision
    return out


@dataclass
class _Item:
    enc: object
    clean: object
    token_f: list[float]
    token_p: list[float]
    pref: torch.Tensor
    first: int                                    # index of its first problem


def _attribute_many(handle, items, method, steps, objective, rule, batch_size, prefix_cache, replay, progress,
                    share, **options) -> list[Attribution]:
    m = make_method(method, **options)
    alphas, weights = nodes(rule, steps)
    proper = m.proper()
    if not items:
        return []
    prepared, problems, paths = [], [], []
    for prompt, target in items:
        enc = encode(handle.tokenizer, handle.kind, prompt, target)
        ids = torch.tensor([enc.input_ids], device=handle.device)
        n_prompt = enc.positions[0] + 1 if handle.kind == "causal" else ids.shape[1]
        clean = clean_pass(handle, ids, enc.positions, keep_outputs=True)
        acts = clean.acts[0]                                            # [K, L, N]
        token_f = [float(objective_values(clean.logits[0, k], t, objective)) for k, t in enumerate(enc.target_ids)]
        token_p = [float(objective_values(clean.logits[0, k], t, "prob")) for k, t in enumerate(enc.target_ids)]
        base = m.baselines(handle, ids, enc.positions, n_prompt, acts)  # [K, P, L, N]
        prepared.append(_Item(enc, clean, token_f, token_p, m.prefactor(acts, base), len(problems)))
        for k, (pos, tgt) in enumerate(zip(enc.positions, enc.target_ids)):
            problems.append(make_problem(handle, ids, pos, tgt, clean, prefix_cache=prefix_cache))
            paths.append(Paths(acts[k], base[k]))
        clean.cache = clean.outputs = None          # what the problems need they hold
    longest = max(int(p.ids.shape[1]) for p in problems)
    bs = batch_size or default_batch_size(handle, longest, prefix_cache)
    runner = Runner(handle, problems, objective, replay=replay)
    sums = integrate(runner, paths, alphas, weights, endpoints=proper, batch_size=bs, progress=progress,
                     share=share)
    L, N = handle.n_layers, handle.n_neurons
    params = {"steps": steps, "objective": objective, "rule": rule, **m.params()}
    out = []
    for it in prepared:
        scores = torch.zeros(L, N, dtype=torch.float64)
        delta = torch.zeros(L, dtype=torch.float64)
        for k in range(len(it.enc.target_ids)):
            G, F0 = sums[it.first + k]
            scores += (it.pref[k].double().cpu() * G).sum(dim=0)
            if proper:
                delta += (it.token_f[k] - F0).sum(dim=0)
        if getattr(m, "normalize", False):
            scores = scores / scores.sum(dim=1, keepdim=True)
        completeness = None
        if proper:
            completeness = float((scores.sum(dim=1) - delta).abs().sum() / delta.abs().sum().clamp_min(1e-30))
        prob = float(torch.tensor(it.token_p, dtype=torch.float64).prod())
        p0, i0 = it.clean.logits[0, 0].float().softmax(-1).max(-1)
        prediction = (handle.tokenizer.decode([int(i0)]), float(p0))
        out.append(Attribution(scores.float(), prob, it.token_p, list(it.enc.target_ids), m.name, dict(params),
                               completeness, delta.float() if proper else None, prediction))
    return out


__all__ = ["Attribution", "attribute", "attribute_many", "autocast", "METHODS", "PRECISIONS", "RULES", "IG", "AMIG"]
