"""attribute / attribute_many: prompts and answers in, one score per neuron out (``Attribution``).

The orchestration of one call: every prompt encoded and checked against the context, its clean pass
(``passes.clean_pass``), its method's baselines and multiplier, one problem per answer token
(``rows.make_problem``), rows per batch planned against the memory budget (``plan.plan_batch``), the
rows of all prompts integrated together (``integrate.integrate``) and summed back per prompt, with
completeness and the model's own prediction. What is computed (the method, steps, objective, rule)
is separate from how (``Execution``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from kneuron.attribution.budget import default_budget, limit
from kneuron.attribution.execution import Execution
from kneuron.attribution.integrate import Paths, integrate
from kneuron.attribution.local import Direct
from kneuron.attribution.methods import IG, make_method
from kneuron.attribution.passes import OBJECTIVES, clean_pass, objective_values
from kneuron.attribution.plan import plan_batch
from kneuron.attribution.quadrature import nodes
from kneuron.attribution.rows import make_problem
from kneuron.attribution.runner import RowRunner
from kneuron.errors import ConfigError
from kneuron.models.load import ModelHandle
from kneuron.models.targets import check_context, encode
from kneuron.store.atomic import write_bytes

log = logging.getLogger("kneuron")


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
    residual: float | None = None        # the path integral's completeness residual (steps="auto" measures it;
                                         # a proper method's completeness; None where not measured)

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The k highest-scoring neurons as (layer, index, score)."""
        v, i = self.scores.flatten().topk(min(k, self.scores.numel()))
        n = self.scores.shape[1]
        return [(int(j) // n, int(j) % n, float(s)) for s, j in zip(v, i)]

    _TENSORS = ("scores", "delta")

    def save(self, path) -> Path:
        """One safetensors file (the tensors; everything else as JSON in its metadata), written atomically;
        ``Attribution.load(path)`` gives back an equal result."""
        tensors = {k: getattr(self, k).contiguous() for k in self._TENSORS if getattr(self, k) is not None}
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._TENSORS}
        return write_bytes(path, safetensors_bytes(tensors, metadata={"kneuron.attribution": json.dumps(meta)}))

    @classmethod
    def load(cls, path) -> "Attribution":
        """What ``save`` wrote; a ConfigError (one line) for a file that is not a saved Attribution."""
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["kneuron.attribution"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta["prediction"] = tuple(meta["prediction"])
            return cls(**meta, **{k: tensors.get(k) for k in cls._TENSORS})
        except (OSError, KeyError, TypeError, ValueError, SafetensorError) as e:   # missing, not ours, fields
            raise ConfigError(f"{path}: not a saved Attribution ({type(e).__name__}: {e})") from None


AUTO_START, AUTO_MAX, AUTO_TOLERANCE = 8, 256, 0.05   # steps="auto": 8, 16, ... nodes until the residual < 5 %


def check_settings(method: str | IG | Direct = "ig", steps: int | str = 20, objective: str = "prob",
                   rule: str = "left") -> IG | Direct:
    """The method object; a ConfigError (one line) on a bad setting, before any work."""
    m = make_method(method)
    if steps == "auto":
        if isinstance(m, Direct):
            raise ConfigError(f"steps='auto' is for the path methods (ig, amig); {m.name} integrates nothing")
        nodes(rule, AUTO_START)
    elif isinstance(steps, str) or isinstance(steps, bool):
        raise ConfigError(f"steps must be an integer >= 1 or 'auto', not {steps!r}")
    else:
        nodes(rule, steps)
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    return m


_DEFAULT = Execution()


def attribute(handle: ModelHandle, prompt: str, target: str, *, method: str | IG = "ig", steps: int | str = 20,
              objective: str = "prob", rule: str = "left", execution: Execution = _DEFAULT,
              tolerance: float = AUTO_TOLERANCE) -> Attribution:
    """Integrated-gradients score of every neuron for the gold ``target`` after ``prompt``.

    Causal models: ``prompt`` is the text before the answer. Masked models: ``prompt`` marks the
    answer's place with ``[Y]`` or the mask token (expanded to one mask per answer token).
    Multi-token answers: sum of the per-token attributions, each token scored after the gold prefix.
    ``method``: ``IG()``, ``AMIG(paths=..., prefactor=..., normalize=...)``, or "ig" / "amig" (their
    defaults). ``objective``: "prob" or "logprob"; ``rule``: the integration rule (``RULES``) with
    ``steps`` nodes, or ``steps="auto"``: 8, 16, 32 ... nodes (at most ``AUTO_MAX``) until the path
    integral's completeness residual is below ``tolerance`` (default ``AUTO_TOLERANCE``, 5 %; recorded as
    ``residual``, the steps used in ``params``). ``execution``: how it runs (batch size, caches,
    precision ...). See ``attribute_many`` for several prompts in one batch.
    """
    return attribute_many(handle, [(prompt, target)], method=method, steps=steps, objective=objective, rule=rule,
                          execution=execution, tolerance=tolerance)[0]


def attribute_many(handle: ModelHandle, items: list[tuple[str, str]], *, method: str | IG = "ig",
                   steps: int | str = 20, objective: str = "prob", rule: str = "left",
                   execution: Execution = _DEFAULT, tolerance: float = AUTO_TOLERANCE) -> list[Attribution]:
    """``attribute`` for several (prompt, target) pairs at once: the rows of all of them (every answer
    token, layer, path and step) go through the model in shared batches (``execution.share``; padded
    and masked, where the model allows it), which keeps a GPU busy with small models or short
    prompts. The results equal one ``attribute`` call per pair."""
    m = check_settings(method, steps, objective, rule)
    if not isinstance(execution, Execution):
        raise ConfigError(f"execution must be an Execution, not {type(execution).__name__}")
    if isinstance(m, Direct):
        return _attribute_direct(handle, items, m, objective)
    if steps == "auto" and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                            or not tolerance > 0):
        raise ConfigError(f"tolerance must be > 0 (a fraction of F(a) - F(b)), not {tolerance!r}")
    budget = execution.max_memory if execution.max_memory is not None else default_budget(handle.device)
    with execution.autocast(handle.device), limit(budget):       # the budget before the prompts' own passes
        if steps == "auto":
            out = _auto(handle, items, m, objective, rule, execution, budget, float(tolerance))
        else:
            out = _attribute_many(handle, items, m, steps, objective, rule, execution, budget)
    for a in out:
        if execution.precision != "fp32":
            a.params["precision"] = execution.precision
    return out


def _auto(handle, items, m: IG, objective: str, rule: str, ex: Execution, budget, tol: float) -> list[Attribution]:
    """steps="auto": each pair at AUTO_START nodes, then twice as many for those whose residual is still at
    or above ``tol``, up to AUTO_MAX (where a pair stops above ``tol``, its ``residual`` says so)."""
    out: list[Attribution | None] = [None] * len(items)
    pending, steps = list(range(len(items))), AUTO_START
    while pending:
        got = _attribute_many(handle, [items[i] for i in pending], m, steps, objective, rule, ex, budget,
                              residual=True)
        left = []
        for i, a in zip(pending, got):
            a.params.update(steps_auto={"tolerance": tol, "max": AUTO_MAX})
            out[i] = a
            if a.residual is not None and a.residual >= tol and steps < AUTO_MAX:
                left.append(i)
        pending, steps = left, steps * 2
    return out


def _attribute_direct(handle: ModelHandle, items, m: Direct, objective: str) -> list[Attribution]:
    """A baseline (``local``, ``mask``): each pair scored at the point itself, one after the other."""
    out = []
    for (prompt, target), enc in zip(items, _encoded(handle, items)):
        scores, logits = m.run(handle, enc, prompt, target, objective)
        token_p = [float(objective_values(logits[k], t, "prob")) for k, t in enumerate(enc.target_ids)]
        prob, prediction = _answer(handle, token_p, logits[0])
        out.append(Attribution(scores.float(), prob, token_p, list(enc.target_ids), m.name,
                               {"objective": objective, **m.params()}, None, None, prediction))
    return out


def _encoded(handle: ModelHandle, items) -> list:
    """Every (prompt, target) encoded and checked against the context before any model work."""
    encoded = [encode(handle.tokenizer, handle.kind, prompt, target) for prompt, target in items]
    for enc in encoded:
        check_context(enc, handle.max_positions)
    return encoded


def _answer(handle: ModelHandle, token_p: list[float], first_logits: torch.Tensor) -> tuple[float, tuple[str, float]]:
    """(p of the whole answer, the model's own top token and its p at the first answer position)."""
    p0, i0 = first_logits.float().softmax(-1).max(-1)
    return float(torch.tensor(token_p, dtype=torch.float64).prod()), (handle.tokenizer.decode([int(i0)]), float(p0))


@dataclass
class _Item:
    enc: object
    clean: object
    token_f: list[float]
    token_p: list[float]
    pref: torch.Tensor
    first: int                                    # index of its first problem


def _attribute_many(handle: ModelHandle, items, m: IG, steps: int, objective: str, rule: str,
                    ex: Execution, budget: int | None = None, residual: bool = False) -> list[Attribution]:
    """``residual``: also measure the path integral's completeness for a method that is not proper (its
    F at the baselines; the integrated gradient times (activation - baseline) against F(a) - F(b))."""
    alphas, weights = nodes(rule, steps)
    proper = m.proper()
    ends = proper or residual
    if not items:
        return []
    prepared, problems, paths = [], [], []
    for enc in _encoded(handle, items):
        ids = torch.tensor([enc.input_ids], device=handle.device)
        n_prompt = enc.positions[0] + 1 if handle.kind == "causal" else ids.shape[1]
        clean = clean_pass(handle, ids, enc.positions, keep_outputs=True)
        acts = clean.acts[0]                                            # [K, L, N]
        token_f = [float(objective_values(clean.logits[0, k], t, objective)) for k, t in enumerate(enc.target_ids)]
        token_p = [float(objective_values(clean.logits[0, k], t, "prob")) for k, t in enumerate(enc.target_ids)]
        base = m.baselines(handle, ids, enc.positions, n_prompt, acts)  # [K, P, L, N]
        prepared.append(_Item(enc, clean, token_f, token_p, m.multiplier(acts, base), len(problems)))
        for k, (pos, tgt) in enumerate(zip(enc.positions, enc.target_ids)):
            problems.append(make_problem(handle, ids, pos, tgt, clean, prefix_cache=ex.prefix_cache))
            paths.append(Paths(acts[k], base[k]))
        clean.cache = clean.outputs = None          # what the problems need they hold
    longest = max(int(p.ids.shape[1]) + p.past_len for p in problems)
    bs = ex.batch_size
    if bs is None or ex.max_memory is not None:
        n_paths = [int(p.baselines.shape[0]) for p in paths]
        nodes_per_path = len(alphas) + (1 if ends and not bool((alphas == 0).any()) else 0) - int((alphas == 1).sum())
        shared = ex.share and len(problems) > 1
        planned = plan_batch(handle, longest, budget, prefix_cache=ex.prefix_cache,
                             rows_per_layer=max(1, nodes_per_path) * (sum(n_paths) if shared else max(n_paths)),
                             prompts=len(problems), paths=sum(n_paths))
        log.debug("%s: %d rows per batch, estimated %.0f MB of a budget of %s MB", handle.name, planned.rows,
                  planned.bytes / 2**20, "-" if budget is None else f"{budget / 2**20:.0f}")
        bs = planned.rows if bs is None else min(bs, planned.rows)
    runner = RowRunner(handle, problems, objective, replay=ex.replay)
    sums = integrate(runner, paths, alphas, weights, endpoints=ends, batch_size=bs, progress=ex.progress,
                     share=ex.share)
    L, N = handle.n_layers, handle.n_neurons
    params = {"steps": steps, "objective": objective, "rule": rule, **m.params()}
    out = []
    for it in prepared:
        scores = torch.zeros(L, N, dtype=torch.float64)
        delta = torch.zeros(L, dtype=torch.float64)
        path_sums = torch.zeros(L, dtype=torch.float64)      # sum_j (a - b) G per layer, over paths and tokens
        for k in range(len(it.enc.target_ids)):
            G, F0 = sums[it.first + k]
            scores += (it.pref[k].double().cpu() * G).sum(dim=0)
            if ends:
                delta += (it.token_f[k] - F0).sum(dim=0)
                p = paths[it.first + k]
                path_sums += ((p.acts.unsqueeze(0) - p.baselines).double().cpu() * G).sum(dim=(0, 2))
        if getattr(m, "normalize", False):
            scores = scores / scores.sum(dim=1, keepdim=True)
        completeness = res = None
        if ends:
            res = float((path_sums - delta).abs().sum() / delta.abs().sum().clamp_min(1e-30))
        if proper:
            completeness = float((scores.sum(dim=1) - delta).abs().sum() / delta.abs().sum().clamp_min(1e-30))
        prob, prediction = _answer(handle, it.token_p, it.clean.logits[0, 0])
        out.append(Attribution(scores.float(), prob, it.token_p, list(it.enc.target_ids), m.name, dict(params),
                               completeness, delta.float() if proper else None, prediction, res))
    return out
