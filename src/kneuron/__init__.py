"""kneuron: find, test and use the knowledge neurons of transformer language models."""
from ._version import __version__

from kneuron.attribution import AMIG, IG, Attribution, Execution, attribute, attribute_many
from kneuron.paper.table1 import evaluate
from kneuron.facts import ConfigError, Fact, FactError, KneuronError, load_facts, save_facts
from kneuron.intervene import enhance, erase, suppress
from kneuron.runs.locate import LocalExecutor, LocateConfig, locate, locate_fact
from kneuron.runs.ray import RayExecutor
from kneuron.metrics import table1
from kneuron.models import DEFAULT_MODEL, ModelHandle, ModelLoadError, from_model, load_model
from kneuron.facts.templates import Query, QueryError, queries_for
from kneuron.models.targets import encode
from kneuron.neurons import NeuronSet, refine, select
from kneuron.organisms.plant import Planted, PlantSpec, plant
from kneuron.probe import answer_prob, predict
from kneuron.runs.reopen import load_run, open_model
from kneuron.runs.store import RunStore, RunStoreError, open_run

__all__ = ["AMIG", "IG", "Attribution", "Execution", "attribute", "attribute_many", "evaluate", "Fact", "FactError", "load_facts",
           "save_facts", "enhance", "erase", "suppress", "LocateConfig", "LocalExecutor", "RayExecutor", "locate", "locate_fact", "table1",
           "DEFAULT_MODEL", "ModelHandle", "ModelLoadError", "from_model", "load_model", "Query",
           "QueryError", "encode", "queries_for", "NeuronSet", "refine", "select", "Planted", "PlantSpec", "plant", "answer_prob", "predict",
           "RunStore", "RunStoreError", "open_run", "load_run", "open_model", "KneuronError", "ConfigError"]
