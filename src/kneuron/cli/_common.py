"""What every command group shares: model loading, expected errors, JSON output."""
from __future__ import annotations

import json
import os
from typing import Optional

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # kneuron never downloads
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_HELP = "bundled name (smollm2-135m), local directory, .gguf file, or a hub id already in the local cache"


def _fail(msg: str, code: int = 2):
    typer.echo(f"kneuron: error: {msg}", err=True)
    raise typer.Exit(code)


def _errors():
    from kneuron.facts import FactError
    from kneuron.models.load import ModelLoadError
    from kneuron.models.sites import SiteError
    from kneuron.facts.templates import QueryError
    from kneuron.runs.ray import EngineError
    from kneuron.runs.store import RunStoreError
    return (FactError, ModelLoadError, SiteError, QueryError, RunStoreError, EngineError, ValueError, FileNotFoundError)


def _quiet_hf():
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import warnings
    warnings.filterwarnings("ignore")


def _load(model: str, site: Optional[str] = None, device: Optional[str] = None):
    from kneuron.models import load_model
    _quiet_hf()
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else None
    return load_model(model, site=site, device=device) if device else load_model(model, site=site)


def _print_json(obj):
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


