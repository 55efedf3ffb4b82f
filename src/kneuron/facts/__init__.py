"""Layer 1 — facts: the schema, templates -> queries, canonical JSONL, bundled sets and the public
directory layouts (mLAMA, X-FACTR, ParaRel). Imports nothing else of kneuron."""
from .io import BUNDLED_DIR, bundled_names, fact_file_hash, load_facts, load_factset, resolve_facts, save_facts, stats
from .layouts import FactSet
from kneuron.errors import ConfigError, KneuronError
from .schema import Fact, FactError, relation_key
from .templates import Query, QueryError, queries_for, y_ends_template

__all__ = ["BUNDLED_DIR", "ConfigError", "KneuronError", "Fact", "FactError", "FactSet", "Query", "QueryError", "bundled_names", "fact_file_hash",
           "load_facts", "load_factset", "queries_for", "relation_key", "resolve_facts", "save_facts", "stats",
           "y_ends_template"]
