"""The JSON the Prompt view draws, from the library's results: a prompt's predictions with its logit
lens, and an attribution with its heatmap. One shape for the single prompt (api.py) and for each
language of the side-by-side view (bilingual.py), so the page draws both with the same code."""
from __future__ import annotations

from kneuron.attribution import Attribution
from kneuron.lens import logit_lens
from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode
from kneuron.probe import answer_prob, predict


def name(layer: int, index: int) -> str:
    return f"L{layer}N{index}"


def tokens(pairs) -> list[dict]:
    return [{"token": t, "p": p} for t, p in pairs]


def short(x: float) -> float:
    """A score for the heatmap: 4 significant digits (the page's list and hover show exact values)."""
    return float(f"{x:.4g}")


def prediction(h: ModelHandle, model: str, prompt: str, answer: str = "", k: int = 10) -> dict:
    """The top ``k`` predictions after ``prompt``, p(answer) when one is given, the logit lens before and
    after each MLP and the strongest neuron updates (``probe.predict``, ``probe.answer_prob``,
    ``lens.logit_lens``). The caller holds the model."""
    top = predict(h, prompt, k)
    lens = logit_lens(h, prompt, k=5)
    gold = answer_prob(h, prompt, answer) if answer.strip() else None
    return {"model": model, "prompt": prompt, "top": tokens(top),
            "answer": gold and {"text": answer, "p": gold.prob, "token_probs": gold.token_probs},
            "lens": [{"layer": x.layer, "before": x.before and tokens(x.before), "after": tokens(x.after)}
                     for x in lens.layers],
            "updates": [{"neuron": name(l, i), "layer": l, "index": i, "activation": a, "size": s}
                        for l, i, a, s in lens.updates]}


def rows(h: ModelHandle, prompt: str, target: str, steps: int) -> int:
    """The progress units of attributing ``target`` after ``prompt``: rows of one path (ig; amig's mean path)."""
    return h.n_layers * steps * len(encode(h.tokenizer, h.kind, prompt, target).target_ids)


def attribution(a: Attribution, model: str, prompt: str, answer: str, steps: int, k: int = 20) -> dict:
    """An attribution as the page draws it: every neuron's score (the heatmap) and the top ``k``."""
    return {"model": model, "prompt": prompt, "answer": answer, "method": a.method, "steps": steps,
            "prob": a.prob, "prediction": {"token": a.prediction[0], "p": a.prediction[1]},
            "completeness": a.completeness, "scores": [[short(x) for x in row] for row in a.scores.tolist()],
            "top": [{"neuron": name(l, i), "layer": l, "index": i, "score": s} for l, i, s in a.top(k)]}
