"""Knowledge-neuron edits: write to the value vectors of a fact's knowledge neurons.

    kn        Dai et al. (2022), the reference code's norm-scaled rule, for each neuron i (‖v_i‖ taken before
              the edit):  v_i <- v_i - l1 * ‖v_i‖/‖e_old‖ * e_old + l2 * ‖v_i‖/‖e_new‖ * e_new,  l1 = 1, l2 = 8
    kn-eai    EleutherAI / EasyEdit's rule on the same neurons:  v_i <- v_i - 2 e(argmax before the edit) + 2 e_new
    kn-erase  zero the neurons' value vectors (fact erasure); ``erase_relation``: a relation's top-20 neurons
    likn      the kn rule on the neurons the fact shares with the same fact in another language, both
              languages' terms at once
    likn-transfer  the same neurons, the edit language's terms only: the cross-lingual transfer test

``e`` is a row of the model's OUTPUT embedding (``get_output_embeddings().weight``, tied to the input
embedding or not). A value vector is column i of a Linear output projection (BERT, Llama ...) or row i
of GPT-2's Conv1D (``value_index`` picks the layout).

**Objects of several tokens**: ``e_old`` / ``e_new`` is the mean of the rows of the object's tokens, as
the tokenizer splits it in context (the rewrite prompt -- the fact's first usable prompt -- followed by
the object, e.g. with GPT-2's leading space), so that the edit pushes every token of the new object
and pulls every token of the old one; for a one-token object this is exactly Dai et al.'s rule.

**Neurons**: ``neurons=`` in the edit's context (precomputed, e.g. from a ``locate`` run), else the
fact's refined knowledge neurons found with the method's ``localize`` configuration (a ``LocateConfig``;
``localize.fact_neurons``) on its ``prompts`` (``"all"`` usable templates, or ``"rewrite"``: the fact's
first usable prompt only, the rewrite prompt of a record's ``edit_fact``, so that the paraphrases PS is
measured on stay unseen); minus ``common=`` (the relation's common neurons, ``localize.relation_filter``).
Without ``common`` nothing is filtered: Dai et al.'s filter needs the relation's other facts, which one
edit does not see. Each Edit's ``info`` holds the neurons written (``neurons``), those dropped as common
(``filtered``), the lambdas and the token ids used; ``seconds`` includes the localisation, which is
nearly all of an edit's cost (it grows as steps x prompts x answer tokens; BENCHMARKS.md, "Editing methods").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable

import torch

from kneuron.errors import ConfigError
from kneuron.facts.schema import Fact
from kneuron.facts.templates import QueryError
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d, value_vectors
from kneuron.models.targets import encode
from kneuron.neurons import LocateConfig, Neuron

from ..base import Change, Edit, EditContext, EditError, EditMethod, Rewrite, value_index
import kneuron.editing.localize as loc

LAMBDA1, LAMBDA2 = 1.0, 8.0       # Dai et al.'s values
EAI_SCALE = 2.0                   # EleutherAI / EasyEdit


# ----------------------------------------------------------------------------- the methods

@dataclass(frozen=True)
class NeuronMethod(EditMethod):
    """A method that writes the value vectors of the fact's knowledge neurons: ``neurons=`` in the
    context, else those ``localize`` finds on the fact's first ``max_prompts`` prompts (None: all;
    ``prompts="rewrite"``: the first one only, ``localize.PROMPTS``)."""
    localize: LocateConfig = field(default_factory=lambda: loc.LOCALIZE)
    max_prompts: int | None = None
    prompts: str = "all"
    uses_neurons: ClassVar[bool] = True
    common_filter: ClassVar[bool] = True
    batch_rule: ClassVar[str | None] = "add"
    context: ClassVar[tuple[str, ...]] = ("neurons", "common", "execution")

    def __post_init__(self):
        object.__setattr__(self, "localize", loc.locate_config(self.localize))
        one = loc.prompt_limit(self.prompts)
        if one is not None and self.max_prompts not in (None, one):
            raise ConfigError(f"{self.name}: prompts='rewrite' localises on one prompt; max_prompts="
                              f"{self.max_prompts} contradicts it (leave one of them out)")

    @property
    def n_prompts(self) -> int | None:
        """How many of the fact's prompts it localises on (None: all)."""
        return loc.prompt_limit(self.prompts) or self.max_prompts

    def neurons(self, handle: ModelHandle, fact: Fact, ctx: EditContext, given=...) -> tuple[list[Neuron], dict]:
        """The neurons written and the info recording them (``localize.edit_neurons``)."""
        return loc.edit_neurons(handle, fact, ctx.neurons if given is ... else given, ctx.common, self.name,
                                self.localize, self.n_prompts, ctx.execution)


@dataclass(frozen=True)
class KN(NeuronMethod):
    """Dai et al.'s knowledge-neuron edit (the norm-scaled rule, ``lambda1`` / ``lambda2``)."""
    lambda1: float = LAMBDA1
    lambda2: float = LAMBDA2
    name = "kn"
    help = "Dai et al.'s knowledge-neuron edit: the fact's neurons' value vectors, old object's embedding to the new"

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        e_old, e_new, tok = _directions(handle, rewrite)           # fails fast, before the localisation
        used, info = self.neurons(handle, rewrite.fact, ctx)
        changes = _update(handle, used, lambda v: v + _dai(v, e_old, e_new, self.lambda1, self.lambda2))
        info.update(lambda1=self.lambda1, lambda2=self.lambda2, **tok)
        return Edit(handle, self.name, rewrite, changes, info, time.perf_counter() - t0)


@dataclass(frozen=True)
class KnEai(NeuronMethod):
    """EleutherAI's knowledge-neuron edit (as in EasyEdit's KN), for comparison: for each neuron,
    ``v -= scale * e(the model's top token before the edit)`` and ``v += scale * e_new`` (``e_new``: the
    mean row of the new object's tokens, as in ``kn``). The top token is the model's prediction at the
    first answer position of the rewrite prompt (masked models: as many masks as the old object has
    tokens)."""
    scale: float = EAI_SCALE
    name = "kn-eai"
    help = "the knowledge-neuron edit by EleutherAI / EasyEdit's rule (-2x the top token's embedding, +2x the new's)"

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        _, e_new, tok = _directions(handle, rewrite)
        top = _top_token(handle, rewrite.fact)
        used, info = self.neurons(handle, rewrite.fact, ctx)
        e_top = _embeddings(handle)[top].double()
        changes = _update(handle, used, lambda v: v - self.scale * e_top + self.scale * e_new)
        info.update(scale=self.scale, top_token=top, **tok)
        return Edit(handle, self.name, rewrite, changes, info, time.perf_counter() - t0)


@dataclass(frozen=True)
class KnErase(NeuronMethod):
    """Fact erasure: the value vectors of the fact's neurons (minus ``common=``) set to zero; the
    rewrite has no new object."""
    name = "kn-erase"
    help = "zero the value vectors of the fact's knowledge neurons (Dai et al.'s erasure; no new object)"
    batch_rule: ClassVar[str | None] = "set"
    needs_new: ClassVar[bool] = False

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        used, info = self.neurons(handle, rewrite.fact, ctx)
        changes = _update(handle, used, torch.zeros_like)
        return Edit(handle, self.name, rewrite, changes, info, time.perf_counter() - t0)


def erase_relation(handle: ModelHandle, neuron_sets: Iterable[Iterable[Neuron]], k: int = 20) -> Edit:
    """Relation erasure (Dai et al.), not applied: zero the value vectors of the ``k`` neurons found for
    the most facts of a relation (``neuron_sets``: one set of neurons per fact of the relation)."""
    t0 = time.perf_counter()
    sets = [list(ns) for ns in neuron_sets]
    if not sets:
        raise EditError("relation erasure needs the neuron sets of the relation's facts, got none")
    used = loc.relation_top_neurons(sets, k)
    handle.check_neurons(used, "relation erasure", error=EditError)
    changes = _update(handle, used, torch.zeros_like)
    info = {"neurons": used, "k": k, "n_facts": len(sets)}
    return Edit(handle, "kn-erase", None, changes, info, time.perf_counter() - t0)


@dataclass(frozen=True)
class LIKN(NeuronMethod):
    """The kn edit on the fact's language-independent neurons; the context's ``other`` is the same fact
    (same id) in another language and ``other_new`` the new object in that language.

    Neurons: ``neurons=`` (precomputed), or the intersection of the two languages' refined neurons, each
    language with its own tau (Module 2's definition, ``paper.likn.language_independent``); minus
    ``common=``. Both languages are edited at once: each neuron gets the kn terms of both languages,
    ``v <- v + sum over the two languages of (-l1 ‖v‖ e_old/‖e_old‖ + l2 ‖v‖ e_new/‖e_new‖)``, ‖v‖ taken
    before the edit (a simultaneous edit, not one language after the other), so what it does in the other
    language is its own edit there, not transfer (``LiknTransfer`` is the transfer test). No shared
    neuron: an Edit without changes whose info says so (not an error)."""
    lambda1: float = LAMBDA1
    lambda2: float = LAMBDA2
    name = "likn"
    help = "the kn rule on the neurons the fact shares with its other language, both languages at once"
    common_filter: ClassVar[bool] = False          # its neurons are already the two languages' intersection
    shared_neurons: ClassVar[bool] = True
    languages: ClassVar[int] = 2
    context: ClassVar[tuple[str, ...]] = ("other", "other_new", "neurons", "common", "execution")

    def rewrites(self, rewrite: Rewrite, ctx: EditContext) -> list[Rewrite]:
        """The rewrites whose kn terms the edit writes: the fact's and its other language's."""
        other = _other(rewrite.fact, ctx, self.name, needed=True)
        if ctx.other_new is None:
            raise EditError(f"{other.where('new')}likn needs other_new= (the new object in {other.lang})")
        return [rewrite, Rewrite(other, ctx.other_new)]

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        rewrites = self.rewrites(rewrite, ctx)
        terms = [_directions(handle, r) for r in rewrites]          # fails fast, before the localisation
        used, info = self.shared(handle, rewrite.fact, ctx)
        l1, l2 = self.lambda1, self.lambda2
        changes = _update(handle, used, lambda v: v + sum(_dai(v, eo, en, l1, l2) for eo, en, _ in terms))
        info.update(lambda1=l1, lambda2=l2, langs=[r.fact.lang for r in rewrites],
                    **({"other_new": rewrites[1].new} if len(rewrites) > 1 else {}),
                    **{f"{k}_{r.fact.lang}": t for r, (_, _, tok) in zip(rewrites, terms) for k, t in tok.items()})
        return Edit(handle, self.name, rewrite, changes, info, time.perf_counter() - t0)

    def shared(self, handle: ModelHandle, fact: Fact, ctx: EditContext) -> tuple[list[Neuron], dict]:
        """The neurons written -- ``neurons=``, else the intersection of the fact's and ``other``'s
        localised neurons -- minus ``common=``, and the info recording them (each language's own neurons
        and ``neuron_langs`` when localised here)."""
        given, extra = ctx.neurons, {}
        if given is None:
            other = _other(fact, ctx, self.name, needed=True)
            mine, theirs = (loc.fact_neurons(handle, f, cfg=self.localize, max_prompts=self.n_prompts,
                                             execution=ctx.execution) for f in (fact, other))
            given = sorted(set(mine) & set(theirs))
            extra = {f"neurons_{fact.lang}": mine, f"neurons_{other.lang}": theirs,
                     "neuron_langs": [fact.lang, other.lang],
                     "localize": loc.localize_info(self.localize, self.n_prompts)}
        used, info = self.neurons(handle, fact, ctx, given)
        info["localized"] = ctx.neurons is None
        info.update(extra)
        if not used:
            info["note"] = "no language-independent neurons: nothing to edit"
        return used, info


@dataclass(frozen=True)
class LiknTransfer(LIKN):
    """The cross-lingual transfer test on the language-independent neurons: likn's neurons (``neurons=``,
    else the intersection of the fact's and ``other``'s localised neurons -- the one thing the other
    language contributes), written by the kn rule with the edit language's terms only,
    ``v <- v - l1 ‖v‖ e_old/‖e_old‖ + l2 ‖v‖ e_new/‖e_new‖`` (e_old / e_new: the edit language's object
    and new object, in the context of its rewrite prompt). Nothing of the other language's prompts or new
    object enters the value written, so what the edit does there is transfer. ``other`` is needed only to
    localise; ``other_new`` is not read."""
    name = "likn-transfer"
    help = ("the kn rule on the language-independent neurons, the edit language's terms only (transfer to the "
            "other language)")
    languages: ClassVar[int] = 1
    context: ClassVar[tuple[str, ...]] = ("other", "neurons", "common", "execution")

    def rewrites(self, rewrite: Rewrite, ctx: EditContext) -> list[Rewrite]:
        _other(rewrite.fact, ctx, self.name, needed=ctx.neurons is None)        # checked when given
        return [rewrite]


def _other(fact: Fact, ctx: EditContext, method: str, needed: bool) -> Fact | None:
    """The context's ``other``: the same fact (same id) in another language; EditError (one line) for
    another fact, or for none where ``needed``."""
    other = ctx.other
    if other is None and not needed:
        return None
    if not isinstance(other, Fact):
        raise EditError(f"{fact.where()}{method} needs other= (the same fact in another language)")
    if other.id != fact.id or other.lang == fact.lang:
        raise EditError(f"{fact.where()}{method}'s other= must be fact {fact.id} in another language, "
                        f"got fact {other.id} ({other.lang})")
    return other


# ----------------------------------------------------------------------------- the pieces

def _dai(v: torch.Tensor, e_old: torch.Tensor, e_new: torch.Tensor, lambda1: float, lambda2: float) -> torch.Tensor:
    """Dai et al.'s change of the value vectors ``v`` [k, hidden] (each row scaled by its own norm)."""
    norm = v.norm(dim=1, keepdim=True)
    return -lambda1 * norm * (e_old / e_old.norm()) + lambda2 * norm * (e_new / e_new.norm())


def _embeddings(handle: ModelHandle) -> torch.Tensor:
    """The output embedding [vocabulary, hidden] (the LM head's weight, tied or not)."""
    head = handle.model.get_output_embeddings() if hasattr(handle.model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    width = value_vectors(handle.sites[0]).shape[1]
    if weight is None or weight.dim() != 2 or weight.shape[1] != width:
        raise EditError(f"{handle.name}: no output embedding of width {width} (the value vectors' width) to edit with")
    return weight.detach()


def _answer_ids(handle: ModelHandle, fact: Fact, text: str, field: str) -> list[int]:
    """The tokens of ``text`` as the answer to the fact's first usable prompt (in context)."""
    q = loc.first_query(handle, fact)
    try:
        return encode(handle.tokenizer, handle.kind, q.prompt, text).target_ids
    except QueryError as e:
        raise EditError(f"{fact.where(field)}{e}") from None


def _directions(handle: ModelHandle, rewrite: Rewrite) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """e_old, e_new (float64: the mean output-embedding row of the object's / new object's tokens) and
    the token ids."""
    fact = rewrite.fact
    old = _answer_ids(handle, fact, fact.object, "object")
    new = _answer_ids(handle, fact, rewrite.new, "new")
    if old == new:
        raise EditError(f"{fact.where('new')}the new object {rewrite.new!r} has the same tokens as {fact.object!r}")
    E = _embeddings(handle)
    e_old, e_new = E[old].double().mean(0), E[new].double().mean(0)
    for e, what in ((e_old, "object"), (e_new, "new")):
        if not float(e.norm()) > 0:
            raise EditError(f"{fact.where(what)}its output-embedding rows average to zero; the kn rule needs a direction")
    return e_old, e_new, {"object_tokens": old, "new_tokens": new}


@torch.no_grad()
def _top_token(handle: ModelHandle, fact: Fact) -> int:
    """The model's top token at the first answer position of the fact's first usable prompt."""
    q = loc.first_query(handle, fact)
    try:
        enc = encode(handle.tokenizer, handle.kind, q.prompt, q.target)
    except QueryError as e:
        raise EditError(f"{fact.where('object')}{e}") from None
    ids = torch.tensor([enc.input_ids], device=handle.device)
    logits = handle.model(input_ids=ids).logits
    return int(logits[0, enc.positions[0]].argmax())


def _update(handle: ModelHandle, neurons: list[Neuron], fn: Callable[[torch.Tensor], torch.Tensor]) -> list[Change]:
    """One Change per layer: the value vectors of that layer's ``neurons`` become ``fn(v)`` (``v``:
    [k, hidden], float64, as the model is now), written back in the weight's own layout and dtype."""
    by_layer: dict[int, list[int]] = {}
    for layer, idx in neurons:
        by_layer.setdefault(layer, []).append(idx)
    changes = []
    for layer in sorted(by_layer):
        idx = by_layer[layer]
        proj = handle.sites[layer]
        v = value_vectors(proj).detach()[idx].double()
        new = fn(v)
        name, index = value_index(handle, idx, layer)
        value = new if is_conv1d(proj) else new.T
        changes.append(Change(name, value.to(proj.weight.dtype).contiguous(), index))
    return changes
