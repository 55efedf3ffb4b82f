"""kneuron: find, test and use the knowledge neurons of transformer language models."""
__version__ = "0.1.0"

from .attribution import AMIG, IG, Attribution, attribute
from .experiments.localization import evaluate
from .facts import Fact, FactError, load_facts, save_facts
from .intervene import enhance, erase, suppress
from .localize import LocateConfig, locate, locate_fact
from .metrics import table1
from .models import DEFAULT_MODEL, ModelHandle, ModelLoadError, from_model, load_model
from .models.targets import Query, QueryError, encode, queries_for
from .neurons import NeuronSet, refine, select
from .plant import Planted, PlantSpec, plant
from .probe import answer_prob, predict
from .store import RunStore, RunStoreError, open_run

__all__ = ["AMIG", "IG", "Attribution", "attribute", "evaluate", "Fact", "FactError", "load_facts",
           "save_facts", "enhance", "erase", "suppress", "LocateConfig", "locate", "locate_fact", "table1",
           "DEFAULT_MODEL", "ModelHandle", "ModelLoadError", "from_model", "load_model", "Query",
           "QueryError", "encode", "queries_for", "NeuronSet", "refine", "select", "Planted", "PlantSpec", "plant", "answer_prob", "predict",
           "RunStore", "RunStoreError", "open_run"]
