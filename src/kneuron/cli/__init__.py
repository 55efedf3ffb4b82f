"""kneuron's command line: a thin layer over the library, one file per command group."""
from __future__ import annotations

import os
from typing import Optional

import typer

from kneuron.cli import _common  # noqa: F401  (sets the environment before transformers is imported)
from kneuron.cli._common import DeviceMap, DType, OneLineUsage
from kneuron.cli.bench import app as bench_app
from kneuron.cli.edit import edit_cmd
from kneuron.cli.explore import explore
from kneuron.cli.facts import app as facts_app
from kneuron.cli.organism import app as organism_app
from kneuron.cli.paper import consistency, dkn, factcheck, likn, reproduce
from kneuron.cli.plant import plant_cmd
from kneuron.cli.probe import probe
from kneuron.cli.runs import evaluate, intervene, locate

app = typer.Typer(cls=OneLineUsage, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, test and use the knowledge neurons of transformer language models.")


@app.callback()
def options(offline: bool = typer.Option(False, "--offline", help="never download: hub ids must already be in the "
                                         "local Hugging Face cache (as HF_HUB_OFFLINE=1)"),
            dtype: Optional[DType] = typer.Option(None, "--dtype", help="dtype to load models in (default float32; "
                                                  "auto: the checkpoint's own)"),
            device_map: Optional[DeviceMap] = typer.Option(None, "--device-map", help="auto: spread a model too large "
                                                           "for one GPU over the GPUs and CPU (needs accelerate)"),
            threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads torch uses (default: "
                                                  "torch's; 1 is often fastest on a small, shared CPU)")):
    """Find, test and use the knowledge neurons of transformer language models.

    Models: bundled names, local directories, .gguf files or Hugging Face hub ids (downloaded unless --offline)."""
    load = _common.LOAD                # updated in place: `from kneuron.cli._common import LOAD` stays valid
    load.offline, load.dtype = offline, (dtype.value if dtype else None)
    load.device_map = device_map.value if device_map else None
    if offline:                        # also for what runs in other processes (ray workers)
        os.environ["HF_HUB_OFFLINE"] = "1"
    if threads is not None:
        import torch
        torch.set_num_threads(threads)


for command in (probe, locate, intervene, evaluate, likn, dkn, factcheck, consistency, reproduce):
    app.command()(command)
app.command("plant")(plant_cmd)
app.command("edit")(edit_cmd)
app.command("explore")(explore)
app.add_typer(facts_app, name="facts")
app.add_typer(organism_app, name="organism")
app.add_typer(bench_app, name="bench")


def main():
    app()


if __name__ == "__main__":
    main()
