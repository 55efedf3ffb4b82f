"""The explorer's web server: Starlette routes over ``Explorer`` (api.py), the static page, and
Plotly's JavaScript from the installed ``plotly`` package (nothing is fetched from the internet)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import uvicorn

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kneuron.explore.api import Explorer
from kneuron.errors import KneuronError

log = logging.getLogger("kneuron.explore")
STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def plotly_js() -> Path:
    import plotly
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _endpoint(call):
    """An async route around ``call(explorer, request_params)``, run in a worker thread. A KneuronError
    (bad input) answers 400 with its one-line message and logs one line; anything else is a bug: 500,
    the message, and the traceback in the log. The server goes on either way."""
    async def endpoint(request: Request):
        params = dict(request.query_params)
        params.update(request.path_params)
        if request.method == "POST":
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return JSONResponse({"error": "the request body is not a JSON object"}, status_code=400)
            params.update(body)
        try:
            out = await run_in_threadpool(call, request.app.state.explorer, params)
        except KneuronError as e:
            log.warning("%s %s: %s", request.method, request.url.path, e)
            return JSONResponse({"error": str(e)}, status_code=400)
        except Exception as e:
            log.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)
        return out if isinstance(out, FileResponse) else JSONResponse(out)
    return endpoint


def _routes() -> list:
    api = [
        ("/api/meta", "GET", lambda x, p: x.meta()),
        ("/api/models", "GET", lambda x, p: {"models": x.models.info(), "edits": x.active_edits(), **x.list_runs()}),
        ("/api/predict", "POST", lambda x, p: x.predict(p)),
        ("/api/attribute", "POST", lambda x, p: x.attribute(p)),
        ("/api/facts", "GET", lambda x, p: x.facts(p)),
        ("/api/bilingual", "POST", lambda x, p: x.bilingual(p)),
        ("/api/jobs/{job_id}", "GET", lambda x, p: x.job(p["job_id"])),
        ("/api/jobs/{job_id}/cancel", "POST", lambda x, p: x.cancel(p["job_id"])),
        ("/api/neuron", "POST", lambda x, p: x.neuron(p)),
        ("/api/intervene", "POST", lambda x, p: x.intervene(p)),
        ("/api/values/search", "POST", lambda x, p: x.search(p)),
        ("/api/runs", "GET", lambda x, p: x.list_runs()),
        ("/api/runs/open", "POST", lambda x, p: x.open_run(p)),
        ("/api/runs/{run_id}", "GET", lambda x, p: x.run(p["run_id"])),
        ("/api/runs/{run_id}/facts/{i}", "GET", lambda x, p: x.fact(p["run_id"], p["i"])),
        ("/api/runs/{run_id}/facts/{i}/measure", "POST", lambda x, p: x.measure(p["run_id"], p["i"])),
        ("/runs/{run_id}/report", "GET", lambda x, p: FileResponse(x.report(p["run_id"]))),
        ("/api/edit/facts", "GET", lambda x, p: x.edit_facts(p)),
        ("/api/edit", "POST", lambda x, p: x.edit(p)),
        ("/api/edit/undo", "POST", lambda x, p: x.undo(p)),
    ]
    return ([Route(path, _endpoint(call), methods=[method]) for path, method, call in api]
            + [Route("/", lambda r: FileResponse(STATIC / "index.html")),
               Route("/static/plotly.min.js", lambda r: FileResponse(plotly_js())),
               Mount("/static", StaticFiles(directory=STATIC), name="static")])


def make_app(explorer: Explorer) -> Starlette:
    app = Starlette(routes=_routes())
    app.state.explorer = explorer
    return app


def check_host(host: str) -> str | None:
    """The warning to print for a host other than this machine's loopback, else None."""
    if host in LOCAL_HOSTS:
        return None
    return (f"listening on {host}: anyone who can reach this machine on the network can run the models and "
            "read the runs opened here")


class Server(uvicorn.Server):
    """uvicorn's server that calls ``on_ready(url)`` once it listens (``port=0``: a free port)."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 8765,
                 on_ready: Callable[[str], None] | None = None):
        super().__init__(uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning"))
        self.on_ready, self.url = on_ready, None

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
            if self.on_ready:
                self.on_ready(self.url)
