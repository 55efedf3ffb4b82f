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
from ._version import __version__

from kneuron.attribution import AMIG, IG, Attribution, Execution, attribute
from kneuron.editing import Edit, edit
from kneuron.errors import KneuronError
from kneuron.facts import Fact, load_facts
from kneuron.intervene import enhance, suppress
from kneuron.models import ModelHandle, load_model
from kneuron.neurons import LocateConfig, localize
from kneuron.runs.locate import locate
from kneuron.runs.store import Run, open_run

__all__ = ["AMIG", "IG", "Attribution", "Execution", "attribute", "Edit", "edit", "KneuronError", "Fact", "load_facts",
           "enhance", "suppress", "ModelHandle", "load_model", "LocateConfig", "localize", "locate", "Run", "open_run"]
