"""What every command group shares: model loading, expected errors, JSON output."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

import typer
from typer.core import TyperGroup

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kneuron.models.registry import CARDS   # the bundled names, for the help

MODEL_HELP = (f"bundled name ({', '.join(CARDS)}), local directory, .gguf file, or Hugging "
              "Face hub id (downloaded and cached unless `kneuron --offline` or HF_HUB_OFFLINE=1)")


@dataclass
class LoadOptions:
    """The global model options (`kneuron [--offline] [--dtype D] [--device-map auto] COMMAND ...`): set by
    the app's callback for each invocation (the one LOAD object, updated in place), used by every _load."""
    offline: bool = False
    dtype: Optional[str] = None          # None: float32
    device_map: Optional[str] = None


LOAD = LoadOptions()


# the choices of options (the tests check them against the library's own lists)
class DType(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class DeviceMap(StrEnum):
    auto = "auto"


class Method(StrEnum):
    ig = "ig"
    amig = "amig"


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class OrganismKind(StrEnum):
    clm = "clm"
    mlm = "mlm"


STEPS_HELP = "integration steps, or auto: 8, 16, 32 ... until the completeness residual is under 5 %"


def parse_steps(value: str) -> int | str:
    """--steps: an integer >= 1 or "auto" (``attribution.api``'s steps="auto")."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise typer.BadParameter(f"an integer >= 1 or auto, not {value!r}") from None
    if n < 1:
        raise typer.BadParameter(f"an integer >= 1 or auto, not {value!r}")
    return n


def _fail(msg: str, code: int = 2):
    typer.echo(f"kneuron: error: {msg}", err=True)
    raise typer.Exit(code)


def _usage_errors() -> tuple[type, tuple]:
    """(UsageError, NoArgsIsHelpError) of the click typer runs on (its own copy in typer >= 0.2x)."""
    import sys
    base = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    help_only = getattr(sys.modules[base.__module__], "NoArgsIsHelpError", None)
    return base, (help_only,) if help_only else ()


@contextmanager
def _one_line_usage():
    """A bad option or argument (click's usage error: a choice, a range, a missing option) as one line."""
    usage, help_only = _usage_errors()
    try:
        yield
    except usage as e:
        if isinstance(e, help_only):          # a group called without a command shows its help
            raise
        where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) else ""
        _fail(" ".join(e.format_message().split()) + where, e.exit_code)


class OneLineUsage(TyperGroup):
    """The app's group: usage errors are one 'kneuron: error:' line and exit code 2, like every other
    expected error, instead of click's usage box."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _one_line_usage():
            return super().invoke(ctx)


def _errors():
    """What a command turns into one line and exit code 2: expected errors only. Anything else is a bug
    and keeps its traceback."""
    from kneuron.errors import KneuronError
    return (KneuronError,)


@contextmanager
def _one_line_errors(interrupted: str):
    """A command's body: an expected error (``_errors()``) is its one line and exit code 2; Ctrl-C is the
    line ``interrupted; <interrupted>`` (what was kept, and how to continue) and exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        _fail(f"interrupted; {interrupted}", 130)
    except _errors() as e:
        _fail(str(e))


def _quiet_hf():
    """The dependencies' log lines, progress bars and warnings off for this command, unless `kneuron --verbose`."""
    from kneuron.models.verbosity import quiet_dependencies, verbose
    quiet_dependencies()
    if not verbose():
        import warnings
        warnings.filterwarnings("ignore")


def _load(model: str, site: Optional[str] = None, device: Optional[str] = None):
    """load_model with the global options (LOAD); device default: cuda if present (none with a device map).
    A hub id is checked first (``models.hub.check``, which load_model also runs): an uncached one with the hub
    unreachable is its one line before torch and transformers are imported."""
    from kneuron.models import hub
    hub.check(model, True if LOAD.offline else None)
    from kneuron.models import load_model
    _quiet_hf()
    if device is None and LOAD.device_map is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else None
    return load_model(model, site=site, device=device, dtype=LOAD.dtype, offline=True if LOAD.offline else None,
                      device_map=LOAD.device_map)


def _executor(engine: str, workers: int):
    """--engine local | ray (``--workers`` Ray workers, each loading the model): where facts are localized."""
    if engine == "ray":
        from kneuron.runs.ray import RayExecutor
        return RayExecutor(workers=workers)
    from kneuron.runs.locate import LocalExecutor
    return LocalExecutor()


def _print_json(obj):
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


