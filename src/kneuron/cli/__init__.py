"""kneuron's command line: a thin layer over the library, one file per command group."""
from __future__ import annotations

import importlib
import os
from typing import Optional

import typer

from kneuron.cli import _common  # noqa: F401  (sets the environment before transformers is imported)
from kneuron.cli._common import DeviceMap, DType, OneLineUsage
from kneuron.models.verbosity import ENV as VERBOSE_ENV

# Each command's module (and the part of the library it needs: torch, transformers, scipy) is imported when the
# command runs, not when kneuron starts: `kneuron probe` with a hub that cannot be reached is its one line within
# seconds. Only `kneuron --help` imports them all (for their one-line summaries).
COMMANDS = {
    "probe": ("kneuron.cli.probe", "probe"),
    "locate": ("kneuron.cli.runs", "locate"),
    "intervene": ("kneuron.cli.runs", "intervene"),
    "evaluate": ("kneuron.cli.runs", "evaluate"),
    "likn": ("kneuron.cli.paper", "likn"),
    "dkn": ("kneuron.cli.paper", "dkn"),
    "factcheck": ("kneuron.cli.paper", "factcheck"),
    "consistency": ("kneuron.cli.paper", "consistency"),
    "cas-effect": ("kneuron.cli.paper", "cas_effect"),
    "reproduce": ("kneuron.cli.paper", "reproduce"),
    "plant": ("kneuron.cli.plant", "plant_cmd"),
    "edit": ("kneuron.cli.edit", "edit_cmd"),
    "explore": ("kneuron.cli.explore", "explore"),
    "facts": ("kneuron.cli.facts", "app"),
    "organism": ("kneuron.cli.organism", "app"),
    "bench": ("kneuron.cli.bench", "app"),
}


class Commands(OneLineUsage):
    """The app's group, its commands (COMMANDS) built from their modules on first use."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        if name in self.commands:
            return self.commands[name]
        module, attr = COMMANDS[name]
        obj = getattr(importlib.import_module(module), attr)
        if isinstance(obj, typer.Typer):             # a group of commands (even of one: `kneuron organism train`)
            command = typer.main.get_group(obj)
        else:                                        # a function: a one-command app, which typer builds as that command
            one = typer.Typer(add_completion=False)
            one.command(name)(obj)
            command = typer.main.get_command(one)
        command.name = name
        self.commands[name] = command
        return command


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, test and use the knowledge neurons of transformer language models.")


@app.callback()
def options(offline: bool = typer.Option(False, "--offline", help="never download: hub ids must already be in the "
                                         "local Hugging Face cache (as HF_HUB_OFFLINE=1)"),
            dtype: Optional[DType] = typer.Option(None, "--dtype", help="dtype to load models in (default float32; "
                                                  "auto: the checkpoint's own)"),
            device_map: Optional[DeviceMap] = typer.Option(None, "--device-map", help="auto: spread a model too large "
                                                           "for one GPU over the GPUs and CPU (needs accelerate)"),
            threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads torch uses (default: "
                                                  "torch's; 1 is often fastest on a small, shared CPU)"),
            verbose: bool = typer.Option(False, "--verbose", help="show the dependencies' own log lines, warnings "
                                         "and progress bars (transformers, huggingface_hub), for debugging")):
    """Find, test and use the knowledge neurons of transformer language models.

    Models: bundled names, local directories, .gguf files or Hugging Face hub ids (downloaded unless --offline)."""
    load = _common.LOAD                # updated in place: `from kneuron.cli._common import LOAD` stays valid
    load.offline, load.dtype = offline, (dtype.value if dtype else None)
    load.device_map = device_map.value if device_map else None
    if offline:                        # also for what runs in other processes (ray workers)
        os.environ["HF_HUB_OFFLINE"] = "1"
    if verbose:                        # read by models.verbosity, here and in worker processes
        os.environ[VERBOSE_ENV] = "1"
    if threads is not None:
        import torch
        torch.set_num_threads(threads)


def main():
    app()


if __name__ == "__main__":
    main()
