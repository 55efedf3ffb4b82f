"""`kneuron explore`: a local web app to look at a model's neurons, attributions and runs.

Views (static/app.js): Prompt (top predictions, the logit lens before and after each MLP, attribution
with progress and a layer x neuron heatmap; and one fact's languages side by side, static/bilingual.js:
each language's first prompt with all of that, its knowledge neurons and the language-independent ones
marked, bilingual.py), Neuron (``#/neuron/L3N17``: the tokens its value vector
promotes and suppresses, its activation, the runs' facts that hold it, switching neurons off or
scaling them), Run (a run directory's facts, neurons, LIKN / DKN groups, per DKN rule, Table 1 effects), Value
search (which neurons promote a token).

    serve(models, runs, host, port)     start the server (blocks)
    make_app(Explorer(Models(names)))   the Starlette app, for tests and embedding

The server computes with the library only (api.py); the page only draws what it gets.
"""
from __future__ import annotations

import logging

from kneuron.explore.api import Explorer
from kneuron.explore.app import Server, check_host, make_app
from kneuron.explore.state import Models
from kneuron.models.registry import CARDS

DEFAULT_MODELS = list(CARDS)              # the bundled models (kneuron.models.registry), in its order


def build(models: list[str] | None = None, runs: list[str] = ()) -> Explorer:
    """The explorer's state: the models offered (loaded on first use) and the runs opened at start
    (their models are offered too)."""
    return Explorer(Models(list(models or DEFAULT_MODELS)), list(runs))


def serve(models: list[str] | None = None, runs: list[str] = (), host: str = "127.0.0.1", port: int = 8765,
          on_ready=print) -> None:
    """Start the explorer on host:port and serve until interrupted; ``on_ready(url)`` once it listens.
    A host other than the loopback is warned about (anyone on the network can then use it)."""
    logging.basicConfig(format="kneuron explore: %(message)s")
    log = logging.getLogger("kneuron.explore")
    log.setLevel(logging.INFO)
    warning = check_host(host)
    if warning:
        log.warning("WARNING: %s", warning)
    explorer = build(models, runs)
    explorer.models.preload(explorer.models.names()[0])       # the first model is ready sooner
    Server(make_app(explorer), host, port, on_ready).run()


__all__ = ["Explorer", "Models", "Server", "build", "make_app", "serve", "check_host", "DEFAULT_MODELS"]
