"""kneuron: find, test and use the knowledge neurons of transformer language models.

The core, one verb each (``load_*``, ``attribute``, ``localize``, ``locate``, ``open_run``, ``suppress`` /
``enhance``, ``edit``) with the types they take and return. Everything else lives in its namespace:

    kneuron.neurons     select, refine, NeuronSet            kneuron.probe      answer_prob, predict
    kneuron.intervene   erase, patch, suppress_each          kneuron.lens       logit lens, value vectors
    kneuron.editing     the edit methods (KN, ROME, ...), METHODS, batch_edit
    kneuron.paper       Tables 1-3, Modules 2-3 (<noun>_from_run), reproduce, report
    kneuron.runs        executors (LocalExecutor, RayExecutor), the run store
    kneuron.plant       the planted ground truth              kneuron.bench      speed, memory, localization, editing
    kneuron.models      ModelHandle, the bundled models' registry, hooks
    kneuron.facts       Fact, templates -> queries, fact files and directory layouts
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy
from ._version import __version__

# Each name is imported on first use (PEP 562), so that `import kneuron.<anything>` -- the command line among
# them -- does not pay for torch, transformers and scipy before it needs them (a hub that cannot be reached is
# one line within seconds, `kneuron --help` is quick).
_HOMES = {
    "AMIG": "kneuron.attribution", "IG": "kneuron.attribution", "Attribution": "kneuron.attribution",
    "Execution": "kneuron.attribution", "attribute": "kneuron.attribution",
    "Edit": "kneuron.editing", "edit": "kneuron.editing",
    "KneuronError": "kneuron.errors",
    "Fact": "kneuron.facts", "load_facts": "kneuron.facts",
    "enhance": "kneuron.intervene", "suppress": "kneuron.intervene",
    "ModelHandle": "kneuron.models", "load_model": "kneuron.models",
    "LocateConfig": "kneuron.neurons", "localize": "kneuron.neurons",
    "locate": "kneuron.runs.locate",
    "Run": "kneuron.runs.store", "open_run": "kneuron.runs.store",
}
__all__ = list(_HOMES)

if TYPE_CHECKING:
    from kneuron.attribution import AMIG, IG, Attribution, Execution, attribute
    from kneuron.editing import Edit, edit
    from kneuron.errors import KneuronError
    from kneuron.facts import Fact, load_facts
    from kneuron.intervene import enhance, suppress
    from kneuron.models import ModelHandle, load_model
    from kneuron.neurons import LocateConfig, localize
    from kneuron.runs.locate import locate
    from kneuron.runs.store import Run, open_run


__getattr__, __dir__ = lazy(__name__, globals(), _HOMES)
