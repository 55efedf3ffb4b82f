"""`kneuron explore`: the local web app (kneuron.explore)."""
from __future__ import annotations

from typing import List, Optional

import typer

from kneuron.cli._common import MODEL_HELP, _errors, _fail, _quiet_hf
from kneuron.models.registry import CARDS


def explore(model: Optional[List[str]] = typer.Option(None, "--model", "-m", help=f"a model to offer (repeat for "
                                                      f"several; default {', '.join(CARDS)}): {MODEL_HELP}"),
            run: Optional[List[str]] = typer.Option(None, "--run", help="a run directory to open (from locate or "
                                                    "reproduce; repeat for several)"),
            host: str = typer.Option("127.0.0.1", "--host", help="address to listen on; anything but the "
                                     "loopback lets anyone on the network run the models"),
            port: int = typer.Option(8765, "--port", min=0, max=65535, help="port to listen on")):
    """Start a local web app to look at predictions, neurons, attributions and runs; prints its URL."""
    from kneuron.explore import serve
    _quiet_hf()
    try:
        serve(model or None, run or [], host=host, port=port,
              on_ready=lambda url: typer.echo(f"kneuron explore: {url} (Ctrl-C to stop)"))
    except _errors() as e:
        _fail(str(e))
