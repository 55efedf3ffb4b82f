"""Knowledge editing through a model's weights: every method returns an ``Edit`` (``base.py``) that can be
applied, undone bit for bit, used as a context manager, saved as a model directory, and kept as a state.

    method      class      module              what it changes
    kn          KN         methods/kn.py       value vectors of the fact's knowledge neurons (Dai et al.)
    kn-eai      KnEai      methods/kn.py       the same neurons, EleutherAI / EasyEdit's x2-embedding rule
    kn-erase    KnErase    methods/kn.py       zeroes the fact's neurons' value vectors (Dai et al.'s erasure)
    likn        LIKN       methods/kn.py       the kn rule on the fact's language-independent neurons
    likn-transfer LiknTransfer  methods/kn.py  the same neurons, the edit language's terms only (transfer)
    kn-opt      KnOpt      methods/kn_opt.py   value vectors of the fact's neurons, optimised on ROME's objective
    rome        ROME       methods/rome.py     rank-one update of one layer's MLP output projection (Meng et al.)
    ft-l        FtL        methods/ft.py       ROME's FT-L: one layer's output projection fine-tuned, L∞-bounded,
                                               on the new object read at the last prompt position
    ft-m        FtM        methods/ft.py       EasyEdit's FT-M: the same on the teacher-forced NLL ("ft": its old name)
    memit       MEMIT      methods/memit.py    many rewrites at once over several layers' projections (Meng et al.)
    alphaedit   AlphaEdit  methods/alphaedit.py  MEMIT's update in the preserved keys' null space (Fang et al.)

    e = edit(h, fact, "Rome", method=ROME(layer=6))     # or method="rome", layer=6; METHODS by name
    with e: ...

``batch_edit(edits)`` (batch.py) makes many edits of the value-vector methods at once; ``edit_batch(h,
rewrites, method=...)`` makes a batch with any method that has one (memit and alphaedit: one joint edit).
``health.health(h, e, prompt, before)`` (health.py) is an applied edit's health: ‖ΔW‖/‖W‖, u·k, the NLL
of fixed unrelated sentences before and after, the greedy continuation; ``Health.disabling()``.
"""
from __future__ import annotations

from .base import Change, Edit, EditContext, EditError, EditMethod, Rewrite
from .batch import batch_edit, edit_batch
from .methods import FT, KN, FtL, FtM, LIKN, MEMIT, ROME, AlphaEdit, JointEdit, KnEai, KnErase, KnOpt, LiknTransfer
from .registry import METHODS, edit, method_for

__all__ = ["FT", "FtL", "FtM", "KN", "LIKN", "MEMIT", "METHODS", "ROME", "AlphaEdit", "Change", "Edit", "EditContext",
           "EditError", "EditMethod", "JointEdit", "KnEai", "KnErase", "KnOpt", "LiknTransfer", "Rewrite", "batch_edit",
           "edit", "edit_batch", "method_for"]
