"""The paper's published numbers, in one place: each value with the table, model, language, row and
metric it belongs to and where it was read. The report (paper.beside) and the verdicts (paper.findings)
read them from here; nothing else in kneuron writes a published number.

Sources: Chen et al., "Journey to the Center of the Knowledge Neurons", AAAI 2024, arXiv 2308.13198
(v2, 20 Dec 2023). Tables 2 and 3 give absolute cells; Table 1's cells were not available, only the two
relative gains its prose quotes (v1: "On Chinese, SR rises by 84.34 % (m-BERT) and 44.49 % (m-GPT)").

What the numbers measure (the paper's code, github heng840/AMIG): Table 1 and 2 cells are SR =
|mean Δ_rel / mean Δ_unrel| (enhance x2) + |...| (suppress to 0), Δ the relative change of p(gold),
with outliers cut (suppress Δ > 20, enhance Δ >= 250), on mLAMA's first template per fact. Table 3 cells
are precision / recall / F1 of true-fact verdicts as the code computes them, i.e. with P and R swapped
(its "P" is tp / (tp + fn), its "R" tp / (tp + fp); F1 unaffected).
"""
from __future__ import annotations

from dataclasses import dataclass

PAPER = "Chen et al., AAAI 2024 (arXiv 2308.13198 v2)"


@dataclass(frozen=True)
class Published:
    table: str          # "Table 1" | "Table 2" | "Table 3"
    model: str          # "m-BERT" | "m-GPT" | "BERT" | "GPT-2"
    lang: str           # "en" | "zh"
    row: str            # Table 1: "AMIG vs B-KN"; Table 2: "LIKN" | "Mono-KN" | "Seq-KN"; Table 3: "wo_DKN", "with_DKN"
    metric: str         # "SR" | "P" | "R" | "F1" | "SR gain %"
    value: float
    source: str         # where the value was read


@dataclass(frozen=True)
class PaperModel:
    name: str
    hub_id: str
    kind: str           # "masked" | "causal"
    size: str           # as far as known (paper-method.md §1)
    neuron: str         # what the paper's code hooks as a neuron


MODELS = {
    "m-BERT": PaperModel("m-BERT", "bert-base-multilingual-cased", "masked", "12 layers x 3,072 FFN units",
                         "intermediate output, after GELU"),
    "m-GPT": PaperModel("m-GPT", "ai-forever/mGPT", "causal", "1.3B parameters, GPT-2 architecture, 61 languages "
                        "(24 layers x 8,192 FFN units by its config, not stated in the paper)",
                        "mlp.c_fc output, before GELU"),
}

_T2 = f"{PAPER}, Table 2"
_T3 = f"{PAPER}, Table 3"
_T1 = f"{PAPER}, the prose on Table 1 (v1; its cells were not available)"


def _t2(model: str, lang: str, likn: float, mono: float, seq: float) -> list[Published]:
    return [Published("Table 2", model, lang, row, "SR", v, _T2)
            for row, v in (("LIKN", likn), ("Mono-KN", mono), ("Seq-KN", seq))]


def _t3(model: str, lang: str, wo: tuple[float, float, float], with_: tuple[float, float, float]) -> list[Published]:
    return [Published("Table 3", model, lang, row, m, v, _T3)
            for row, prf in (("wo_DKN", wo), ("with_DKN", with_)) for m, v in zip(("P", "R", "F1"), prf)]


NUMBERS: tuple[Published, ...] = tuple(
    [Published("Table 1", "m-BERT", "zh", "AMIG vs B-KN", "SR gain %", 84.34, _T1),
     Published("Table 1", "m-GPT", "zh", "AMIG vs B-KN", "SR gain %", 44.49, _T1)]
    + _t2("m-BERT", "en", 2.359, 2.139, 3.800) + _t2("m-GPT", "en", 2.542, 2.400, 4.285)
    + _t2("m-BERT", "zh", 7.175, 2.292, 4.092) + _t2("m-GPT", "zh", 8.868, 2.350, 3.654)
    + _t3("m-BERT", "en", (0.222, 0.986, 0.362), (0.493, 0.599, 0.541))
    + _t3("m-GPT", "en", (0.010, 1.000, 0.021), (0.311, 0.709, 0.433))
    + _t3("m-BERT", "zh", (0.010, 1.000, 0.020), (0.870, 0.524, 0.654))
    + _t3("m-GPT", "zh", (0.0002, 1.000, 0.0004), (0.966, 0.511, 0.669))
    + _t3("BERT", "en", (0.301, 0.983, 0.460), (0.504, 0.571, 0.535))
    + _t3("GPT-2", "en", (0.010, 1.000, 0.021), (0.315, 0.608, 0.415)))


def value(table: str, model: str, lang: str, row: str, metric: str) -> float | None:
    """The published value, None when the paper gives none for that cell."""
    for p in NUMBERS:
        if (p.table, p.model, p.lang, p.row, p.metric) == (table, model, lang, row, metric):
            return p.value
    return None


def like_model(kind: str) -> str:
    """The paper's multilingual model of the same kind: m-GPT for a causal model, m-BERT for a masked one."""
    return "m-BERT" if kind == "masked" else "m-GPT"


__all__ = ["MODELS", "NUMBERS", "PAPER", "PaperModel", "Published", "like_model", "value"]
