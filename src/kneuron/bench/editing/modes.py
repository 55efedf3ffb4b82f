"""The editing benchmark's three modes, one strategy each: ``run(method, cases, ctx)`` yields one
``EditRow`` per (case, edit language) that is done -- read back from the run directory or computed now --
and stops early once the context's budget of new edits is spent (a resumed run finishes the rest).

    Single       each edit computed, applied, the case measured in every language, undone
    Sequential   per edit language a chain of kept edits: each computed with the earlier ones applied, then
                 measured; after 1, 10, 50, 100, 250, 500, 1,000 (and the last) kept edits every record
                 edited so far is measured again (S after k edits) with the model's state (unrelated NLL,
                 ‖W − W₀‖/‖W₀‖, GE of the chain's first records' prompts); all undone at the end, bit for
                 bit. The collapse guard (``on_collapse``): an edit whose unrelated NLL rises by more than the health margin
                 against the chain before it is undone (bit for bit) before its case is measured, its row
                 marked guarded, and the chain goes on ("undo") or ends there ("stop"); "keep": no guard
    Batched      per edit language every case's edit computed on the unedited model, all applied at once as
                 one combined edit (``kneuron.editing.batch``), each case measured under the whole batch; a
                 joint method (memit, alphaedit) computes the batch as one edit of every case's rewrite

AlphaEdit's sequential chain is given its kept edits (their keys are its K_p).

Every row carries its edit's health (``kneuron.editing.health``): against the unedited model in single
and batch mode (a batch row: the whole batch's), against the chain before the edit in sequential mode.
Every mode leaves the model's weights as it found them, also when it stops early or fails.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import torch

from kneuron.editing import Edit
from kneuron.editing.health import drift, unrelated_nll
from kneuron.editing.registry import method_class
from kneuron.editing.metrics import CHAIN_GE_PROMPTS, generate, measure, ngram_entropy, record_scores
from kneuron.editing.methods.rome import sweep_scores
from kneuron.editing.records import Case

from .config import CHECKPOINTS
from kneuron.report.progress import progress

from .context import BenchContext
from .rows import Checkpoint, EditRow


class Single:
    name = "single"

    def run(self, method: str, cases: list[Case], ctx: BenchContext) -> Iterator[EditRow]:
        with progress(method, sum(len(c.langs) for c in cases), show=ctx.show) as step:
            for c in cases:
                for lang in c.langs:
                    row = ctx.disk.edit(method, c.case_id, lang)
                    if row is None:
                        if not ctx.budget.left():
                            return
                        with ctx.edit(method, c, lang) as e:
                            health = ctx.health(e, c, lang)
                            row = replace(ctx.row(method, c, lang, e), health=health)
                        ctx.disk.put_edit(row)
                        ctx.budget.spend()
                    yield row
                    step()


class Sequential:
    name = "sequential"

    def run(self, method: str, cases: list[Case], ctx: BenchContext) -> Iterator[EditRow]:
        langs = cases[0].langs
        with progress(f"{method} (sequential)", len(cases) * len(langs), show=ctx.show) as step:
            for lang in langs:
                yield from self._chain(method, lang, cases, ctx, step)

    def _chain(self, method: str, lang: str, cases: list[Case], ctx: BenchContext, step) -> Iterator[EditRow]:
        kept: list[Edit] = []
        origin: dict = {}                                        # each written weight before the chain's first write
        guard = ctx.cfg.on_collapse
        prompts = ge_prompts(cases, lang)
        try:
            steps = ctx.disk.chain(ctx.handle, method, lang)    # an earlier session's steps, kept ones re-applied
            for e in steps:
                if not e.info.get("guarded"):
                    remember(ctx.handle, e, origin)
                    kept.append(settle(e.apply()))
            done, stopped = len(steps), any(e.info.get("guarded") == "stop" for e in steps)
            now = None                                           # the chain's unrelated NLL as it is now
            for i, c in enumerate(cases):
                if i < done:
                    row = ctx.disk.edit(method, c.case_id, lang)
                    if row is not None:
                        yield row
                    step()
                    continue
                if stopped or not ctx.budget.left():
                    break
                if now is None:
                    now = (unrelated_nll(ctx.handle, ctx.health_langs) if any(e.changes for e in kept)
                           else ctx.unrelated.nll)
                history = {"kept": tuple(kept)} if "kept" in method_class(method).context else {}
                e = ctx.edit(method, c, lang, **history)
                remember(ctx.handle, e, origin)
                kept.append(e.apply())
                health, guarded = ctx.health(e, c, lang, before=now), None
                if guard != "keep" and health.disabling():
                    kept.pop().undo()                            # bit for bit: the chain as it was before it
                    guarded, stopped = guard, guard == "stop"
                    ctx.warn(f"{method} edit of case {c.case_id} ({c.fact_id}, {lang}) is disabling (unrelated "
                             f"NLL {health.nll_rise:+.2f} nats): undone" + (", the chain stops" if stopped else ""))
                    mark = Edit(ctx.handle, method, e.rewrite, [], {"guarded": guard}, e.seconds)   # a step that keeps nothing
                else:
                    now, mark = health.nll_after, e
                row = replace(ctx.row(method, c, lang, e), health=health, guarded=guarded)
                ctx.disk.put_edit(row)
                if i + 1 in CHECKPOINTS or i + 1 == len(cases):
                    state = chain_state(ctx, now, origin, prompts)
                    ctx.disk.put_checkpoint(method, checkpoint(ctx, lang, cases[: i + 1], state))
                ctx.disk.put_chain(method, lang, i, mark)        # the commit marker of this step
                if mark is e:
                    settle(e)
                ctx.budget.spend()
                yield row
                step()
        finally:
            restore(ctx.handle, origin)

    @staticmethod
    def curve(method: str, cases: list[Case], ctx: BenchContext) -> dict[str, dict[int, Checkpoint]]:
        """S after k kept edits, per edit language, of the checkpoints stored so far."""
        out: dict = {}
        for lang in cases[0].langs:
            for k in sorted(set(CHECKPOINTS) | {len(cases)}):
                row = ctx.disk.checkpoint(method, lang, k)
                if row is not None:
                    out.setdefault(lang, {})[k] = row
        return out


def checkpoint(ctx: BenchContext, lang: str, cases: list[Case], state: dict | None = None) -> Checkpoint:
    """Every record of ``cases`` measured (in ``lang``, no generation) with the model as it is now."""
    recs = [c.records[lang] for c in cases]
    ms = measure(ctx.handle, recs, generation=False)
    scores = [record_scores(m, ctx.unedited(c)[lang]) for c, m in zip(cases, ms)]
    return Checkpoint(len(cases), lang, scores, sweep_scores(scores), state)


def ge_prompts(cases: list[Case], lang: str) -> list[str]:
    """The prompts a chain's GE is sampled from at each checkpoint: one per record of its first
    CHAIN_GE_PROMPTS."""
    out = []
    for c in cases[:CHAIN_GE_PROMPTS]:
        r = c.records[lang]
        out.append(r.generation[0] if r.generation else r.fact.subject)
    return out


def remember(handle, e: Edit, origin: dict) -> None:
    """Keep the value of each weight ``e`` writes that the chain has not written yet (before ``e`` is applied)."""
    params = dict(handle.model.named_parameters())
    for c in e.changes:
        if c.param not in origin and c.param in params:
            origin[c.param] = params[c.param].detach().clone()


def settle(e: Edit) -> Edit:
    """A kept edit once its step is stored: what undo needs is dropped (``Edit.release``; a chain of 1,000
    ROME edits would otherwise hold 7 GB), the chain being undone from ``origin`` at its end."""
    e.release()
    return e


def restore(handle, origin: dict) -> None:
    """Every weight the chain wrote back to its value before the chain, bit for bit."""
    params = dict(handle.model.named_parameters())
    with torch.no_grad():
        for name, w0 in origin.items():
            params[name].copy_(w0)


def chain_state(ctx: BenchContext, nll: dict | None, origin: dict, prompts: list[str]) -> dict:
    """The chain's model as it is now: unrelated NLL (``nll``: known already; None: measured), how far its
    weights moved, and GE of ``prompts`` (causal models; None otherwise)."""
    if nll is None:
        nll = unrelated_nll(ctx.handle, ctx.health_langs)
    texts = generate(ctx.handle, prompts, seed=ctx.cfg.seed) if ctx.handle.kind == "causal" else []
    ge = 100 * sum(map(ngram_entropy, texts)) / len(texts) if texts else None
    return {"nll": dict(nll), "weight_ratio": drift(ctx.handle, origin), "GE": ge, "texts": texts}


class Batched:
    name = "batch"

    def run(self, method: str, cases: list[Case], ctx: BenchContext) -> Iterator[EditRow]:
        from kneuron.editing.batch import batch_edit
        with progress(f"{method} (batch)", 2 * len(cases) * len(cases[0].langs), show=ctx.show) as step:
            for lang in cases[0].langs:
                done = [ctx.disk.edit(method, c.case_id, lang) for c in cases]
                if all(row is not None for row in done):                # measured already (a resumed run)
                    yield from done
                    step(2 * len(cases))
                    continue
                if method_class(method).batch_rule == "joint":
                    joint = self._joint(method, lang, cases, ctx)
                    if joint is None:
                        return
                    edits = [joint.member(i) for i in range(len(cases))]
                    combined = joint if joint.changes else None
                    step(len(cases))
                else:
                    edits = []
                    for c in cases:
                        e = self._member(method, lang, c, ctx)
                        if e is None:
                            return
                        edits.append(e)
                        step()
                    combined = batch_edit(edits) if any(e.changes for e in edits) else None
                if combined is not None:
                    combined.apply()
                try:
                    shared = None                            # the batch's health, measured once
                    for c, e in zip(cases, edits):
                        row = ctx.disk.edit(method, c.case_id, lang)
                        if row is None:
                            shared = ctx.health(combined or e, c, lang, shared=shared)
                            row = replace(ctx.row(method, c, lang, e, batch=len(cases)), health=shared)
                            ctx.disk.put_edit(row)
                        yield row
                        step()
                finally:
                    if combined is not None:
                        combined.undo()

    @staticmethod
    def _member(method: str, lang: str, case: Case, ctx: BenchContext) -> Edit | None:
        """The case's edit, computed on the unedited model: stored by an earlier session, or computed now
        and stored (None: the budget is spent)."""
        stored = ctx.disk.batch_member(ctx.handle, method, lang, case.case_id)
        if stored is not None:
            return stored
        if not ctx.budget.left():
            return None
        e = ctx.edit(method, case, lang)
        ctx.disk.put_batch_member(lang, case.case_id, e)
        ctx.budget.spend()
        return e


    @staticmethod
    def _joint(method: str, lang: str, cases: list[Case], ctx: BenchContext):
        """A joint method's one edit of every case (a ``JointEdit``), computed on the unedited model: stored
        by an earlier session, or computed now and stored (None: the budget is spent). It counts as one new
        edit per case."""
        stored = ctx.disk.joint(ctx.handle, method, lang)
        if stored is not None:
            return stored
        if not ctx.budget.left():
            return None
        e = ctx.edit_batch(method, cases, lang)
        ctx.disk.put_joint(lang, e)
        for _ in cases:
            ctx.budget.spend()
        return e


STRATEGIES = {m.name: m for m in (Single(), Sequential(), Batched())}   # --mode -> its strategy

__all__ = ["STRATEGIES", "Batched", "Sequential", "Single", "checkpoint"]
