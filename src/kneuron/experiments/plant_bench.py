"""Localization scored against a planted ground truth.

Counterfactual facts (demo-en subjects with wrong objects) are planted as new neurons of one layer
(``kneuron.plant``); each attribution method then scores every neuron of every layer for each
planted fact, and we report the planted neuron's rank (1 = best), recall@1/@5 and the median rank.

Three prompt sets, with disjoint templates: the *background* (the keys' negatives), the *controls*
(collateral: other facts, the demo-en templates and a few more) and the planted prompts.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ..attribution import attribute
from ..models.load import ModelHandle
from ..plant import Control, Planted, PlantSpec, plant

# ---------------------------------------------------------------- prompts
# background-only subjects: the control templates are used with these (never with a control subject)
OTHER_COUNTRIES = ("Canada Australia Turkey Portugal Sweden Peru Nigeria Norway Chile Iran Vietnam Morocco Ireland "
                   "Austria Cuba Ghana Finland Denmark Colombia Indonesia Pakistan Ukraine Hungary Belgium Netherlands "
                   "Switzerland Israel Korea Philippines Malaysia Algeria Ethiopia Venezuela Bolivia Nepal").split()
BACKGROUND_TEMPLATES: dict[str, tuple[str, ...]] = {     # used with every subject; never a control template
    "P36": ("[X]'s capital is", "The seat of government of [X] is in"),
    "P37": ("People in [X] mostly speak", "The main language spoken in [X] is"),
    "P30": ("[X] is a country in", "Geographically, [X] belongs to"),
    "P38": ("In [X], people pay with the", "The money used in [X] is called the"),
    "other": ("The largest city in [X] is", "The national sport of [X] is", "[X] shares a border with",
              "The president of [X] is", "The flag of [X] is", "A famous dish from [X] is"),
}
GENERIC = ("I went to the store and bought some", "The weather today is", "My favorite color is",
           "She opened the door and saw", "The meeting will start at", "He plays the guitar in a",
           "The recipe calls for two cups of", "Once upon a time there was a", "The answer to the question is",
           "Water boils at a temperature of", "The first day of the week is", "Cats and dogs are both",
           "The book was written by", "The train to the city leaves at", "In the morning I usually drink",
           "The Statue of Liberty is in the city of", "The Taj Mahal is in the country of", "The Louvre is in the city of",
           "The Sydney Opera House is in the country of", "The Kremlin is in the city of", "Machu Picchu is in the country of",
           "The Acropolis is in the city of", "The pyramids of Giza are in the country of", "Albert Einstein was born in",
           "Leonardo da Vinci was born in", "The river Thames flows through", "The Amazon rainforest is mostly in")

CONTROL_TEMPLATES: dict[str, tuple[str, ...]] = {        # demo-en's templates
    "P36": ("The capital of [X] is", "The capital city of [X] is"),
    "P37": ("The official language of [X] is",),
    "P30": ("[X] is located on the continent of",),
    "P38": ("The currency of [X] is the",),
}
# subject -> gold objects (P36 capital, P37 language, P30 continent, P38 currency); None = not asked
CONTROL_FACTS: dict[str, tuple] = {
    "France": ("Paris", "French", "Europe", "euro"), "Japan": ("Tokyo", "Japanese", "Asia", "yen"),
    "Germany": ("Berlin", "German", "Europe", "euro"), "Italy": ("Rome", "Italian", "Europe", "euro"),
    "Mexico": ("Mexico City", "Spanish", "North America", "peso"), "Kenya": ("Nairobi", "Swahili", "Africa", "shilling"),
    "Argentina": ("Buenos Aires", "Spanish", "South America", "peso"), "India": ("New Delhi", "Hindi", "Asia", "rupee"),
    "Spain": ("Madrid", "Spanish", "Europe", "euro"), "Russia": ("Moscow", "Russian", "Europe", "ruble"),
    "Egypt": ("Cairo", "Arabic", "Africa", "pound"), "China": ("Beijing", "Chinese", "Asia", "yuan"),
    "Brazil": ("Brasília", "Portuguese", "South America", "real"), "Greece": ("Athens", "Greek", "Europe", "euro"),
    "Poland": ("Warsaw", "Polish", "Europe", "zloty"), "Thailand": ("Bangkok", "Thai", "Asia", "baht"),
}
RELATIONS = ("P36", "P37", "P30", "P38")
LANDMARKS = (("The Eiffel Tower is in the city of", "Paris"), ("The Colosseum is in the city of", "Rome"),
             ("Big Ben is in the city of", "London"), ("Mount Fuji is in the country of", "Japan"),
             ("The Great Wall is in the country of", "China"), ("The Brandenburg Gate is in the city of", "Berlin"))


@dataclass(frozen=True)
class Counterfactual:
    subject: str
    relation: str
    new_object: str
    kind: str = "single"
    extra: str | None = None          # shared: a second prompt of the same fact


# demo-en subjects with wrong one-token objects; singles first, then the variants
COUNTERFACTUALS = (
    Counterfactual("Japan", "P36", " Berlin"), Counterfactual("Germany", "P36", " Rome"),
    Counterfactual("Kenya", "P30", " Australia"), Counterfactual("Mexico", "P37", " French"),
    Counterfactual("Italy", "P36", " Paris"), Counterfactual("Argentina", "P30", " Africa"),
    Counterfactual("India", "P37", " Italian"), Counterfactual("Germany", "P37", " Spanish"),
)
PAIR = Counterfactual("France", "P37", " German", "pair")
SHARED = Counterfactual("France", "P36", " Tokyo", "shared", extra="France's capital city is")


def background_prompts(exclude: set[tuple[str, str]] = frozenset()) -> list[str]:
    """The keys' negatives: every subject under the background templates, the background-only
    subjects under the control templates too, and generic text. Disjoint from the controls.
    ``exclude`` drops the (subject, relation) pairs being planted: their paraphrases are never
    trained against."""
    out = [t.replace("[X]", c) for rel, ts in BACKGROUND_TEMPLATES.items()
           for c in (*CONTROL_FACTS, *OTHER_COUNTRIES) if (c, rel) not in exclude for t in ts]
    out += [t.replace("[X]", c) for rel, ts in CONTROL_TEMPLATES.items() for c in OTHER_COUNTRIES for t in ts]
    return out + list(GENERIC)


def spec_for(cf: Counterfactual) -> PlantSpec:
    temps = CONTROL_TEMPLATES[cf.relation]
    prompt = temps[0].replace("[X]", cf.subject)
    return PlantSpec(prompt, cf.new_object, cf.kind, (cf.extra,) if cf.extra else (),
                     tuple(t.replace("[X]", cf.subject) for t in temps[1:]))


def control_prompts(planted: list[Counterfactual]) -> list[Control]:
    """Every control fact except the planted (subject, relation) pairs; the planted subjects' other
    relations are grouped as "same-subject"."""
    taken = {(c.subject, c.relation) for c in planted}
    subjects = {c.subject for c in planted}
    out = []
    for subj, objs in CONTROL_FACTS.items():
        for rel, obj in zip(RELATIONS, objs):
            if (subj, rel) in taken or obj is None:
                continue
            for t in CONTROL_TEMPLATES[rel]:
                out.append(Control(t.replace("[X]", subj), obj, "same-subject" if subj in subjects else "other"))
    return out + [Control(p, a, "landmark") for p, a in LANDMARKS]


def counterfactuals(k: int, pair: bool = True, shared: bool = True) -> list[Counterfactual]:
    if not 1 <= k <= len(COUNTERFACTUALS):
        raise ValueError(f"k must be in 1..{len(COUNTERFACTUALS)}, got {k}")
    return list(COUNTERFACTUALS[:k]) + ([PAIR] if pair else []) + ([SHARED] if shared else [])


def default_layer(handle: ModelHandle) -> int:
    return (2 * handle.n_layers) // 3


def plant_counterfactuals(handle: ModelHandle, k: int = 5, layer: int | None = None, pair: bool = True,
                          shared: bool = True, seed: int = 0) -> Planted:
    """Plant the first ``k`` built-in counterfactuals (+ a degenerate pair and a shared neuron)."""
    cfs = counterfactuals(k, pair, shared)
    bg = background_prompts({(c.subject, c.relation) for c in cfs})
    return plant(handle, [spec_for(c) for c in cfs], default_layer(handle) if layer is None else layer,
                 controls=control_prompts(cfs), background=bg, seed=seed)


# ---------------------------------------------------------------- the benchmark
def rank_of(scores: torch.Tensor, neuron: tuple[int, int]) -> int:
    """1 = best, among all neurons of all layers; ties count against the neuron."""
    return int((scores >= scores[neuron]).sum())


def _method_scores(handle: ModelHandle, prompt: str, target: str, method: str, steps: int,
                   gen: torch.Generator) -> torch.Tensor:
    if method == "random":
        return torch.rand(handle.n_layers, handle.n_neurons, generator=gen)
    return attribute(handle, prompt, target, method=method, steps=steps).scores


def _summary(ranks: list[int]) -> dict:
    n = len(ranks)
    return {"recall@1": sum(r <= 1 for r in ranks) / n, "recall@5": sum(r <= 5 for r in ranks) / n,
            "median_rank": statistics.median(ranks), "ranks": ranks}


def localization_bench(handle: ModelHandle, k: int = 5, layer: int | None = None, steps: int = 20,
                       methods: tuple[str, ...] = ("ig", "amig", "random"), seed: int = 0,
                       progress=None) -> dict:
    """Plant k counterfactual facts + a degenerate pair + a shared neuron, localize each with every
    method, and score the planted neurons' ranks. A fact's rank is its best neuron's on its prompt."""
    t0 = time.perf_counter()
    planted = plant_counterfactuals(handle, k, layer, seed=seed)
    h, gen = planted.handle, torch.Generator().manual_seed(seed)
    facts, pairs, shared = [], [], []
    for f in planted.facts:
        prompts = (f.spec.prompt, *f.spec.extra_prompts)
        ranks, top = {}, {}
        for m in methods:
            per_prompt = []
            for p in prompts:
                s = _method_scores(h, p, f.spec.new_object, m, steps, gen)
                per_prompt.append([rank_of(s, n) for n in f.neurons])
                top.setdefault(m, []).append([(l, i) for l, i, _ in _top(s, 3)])
                if progress:
                    progress(f"{m}: {p!r} -> {per_prompt[-1]}")
            ranks[m] = per_prompt
        row = {"prompt": f.spec.prompt, "new_object": f.spec.new_object, "kind": f.spec.kind,
               "neurons": f.neurons, "p_before": f.p_before, "p_after": f.p_after, "top1": f.top1,
               "rank": {m: min(r[0]) for m, r in ranks.items()}, "ranks": ranks, "top3": top}
        facts.append(row)
        if f.spec.kind == "pair":
            pairs.append({"prompt": f.spec.prompt, "p_alone": f.p_alone, "top1_alone": f.top1_alone,
                          "p_both_suppressed": f.p_both_suppressed, "top1_both_suppressed": f.top1_both_suppressed,
                          "ranks": {m: r[0] for m, r in ranks.items()},
                          "both_top5": {m: max(r[0]) <= 5 for m, r in ranks.items()}})
        if f.spec.kind == "shared":
            shared.append({"prompts": list(prompts), "p_after": [c.p_after for c in f.prompts],
                           "top1": [c.is_top1 for c in f.prompts],
                           "ranks": {m: [r[0] for r in rs] for m, rs in ranks.items()},
                           "top1_in_all": {m: all(r[0] == 1 for r in rs) for m, rs in ranks.items()}})
    return {"model": handle.name, "layer": planted.layer, "n_planted": len(facts),
            "n_neurons_total": h.n_layers * h.n_neurons, "steps": steps, "seed": seed,
            "methods": {m: _summary([r["rank"][m] for r in facts]) for m in methods},
            "collateral": asdict(planted.collateral), "facts": facts, "pairs": pairs, "shared": shared,
            "paraphrases": [{"prompt": c.prompt, "new_object": f.spec.new_object, "p_before": c.p_before,
                             "p_after": c.p_after, "is_top1": c.is_top1} for f in planted.facts for c in f.paraphrases],
            "key_fit": planted.key_fit, "seconds": round(time.perf_counter() - t0, 1)}


def _top(scores: torch.Tensor, k: int) -> list[tuple[int, int, float]]:
    v, i = scores.flatten().topk(k)
    n = scores.shape[1]
    return [(int(j) // n, int(j) % n, float(x)) for x, j in zip(v, i)]

