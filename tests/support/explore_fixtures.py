"""What the explorer's tests share: a server on a free port in a thread, a small run made here, the
browser (Debian's chromium, driven by Playwright)."""
from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from kneuron import LocateConfig, load_facts, locate
from kneuron.facts import save_facts
from kneuron.explore import Explorer, Models, Server, make_app
from kneuron.facts import fact_file_hash

CLM = "organism-clm"
PROMPT, ANSWER = "The capital of Canada is", "Ottawa"        # a fact organism-clm was trained on
RUN_FACTS = ("P36-008", "P36-013")                          # Canada -> Ottawa, Poland -> Warsaw; en and zh


@contextmanager
def serving(explorer: Explorer):
    """The explorer's server on a free port, in a thread; yields its URL."""
    server = Server(make_app(explorer), port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t = time.time()
    while server.url is None:
        if time.time() - t > 30 or not thread.is_alive():
            raise RuntimeError("the explore server did not start")
        time.sleep(0.05)
    try:
        yield server.url.rstrip("/")
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def bilingual_site(mini_organism, tmp_path_factory, name: str, lacking: str):
    """The miniature bilingual organism offered as ``name`` by an explorer on a free port, one torch thread:
    yields (url, handle, the toy bilingual fact file, the same file without fact ``lacking`` in Chinese)."""
    import torch
    from kneuron.models.load import from_model
    from support.tiny import bilingual_facts
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok, _ = mini_organism("clm")
    h = from_model(model, tok, kind="causal", name=name)
    d = tmp_path_factory.mktemp("facts")
    save_facts(bilingual_facts(), d / "bi.jsonl")
    save_facts([f for f in bilingual_facts() if (f.id, f.lang) != (lacking, "zh")], d / "no-zh.jsonl")
    try:
        with serving(Explorer(Models([name], loader=lambda _: h))) as url:
            yield url, h, str(d / "bi.jsonl"), str(d / "no-zh.jsonl")
    finally:
        torch.set_num_threads(threads)


def call(url: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """(status, JSON) of GET (body None) or POST ``path``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_job(url: str, job: dict, timeout: float = 300) -> dict:
    t = time.time()
    while job["state"] == "running":
        assert time.time() - t < timeout, f"job {job['title']} still running"
        time.sleep(0.1)
        job = call(url, f"/api/jobs/{job['id']}")[1]
    return job


def make_run(handle, out):
    """A small `locate` run on organism-clm: two facts, each in English and Chinese."""
    facts = [f for f in load_facts("en-zh") if f.id in RUN_FACTS]
    path = out.parent / "facts.jsonl"
    save_facts(facts, path)
    locate(handle, facts, LocateConfig(method="ig", steps=3, threshold=0.2), out, facts_path=str(path),
           facts_hash=fact_file_hash(path), show_progress=False)
    return out


def explorer(names: list[str], runs=()) -> Explorer:
    return Explorer(Models(names), list(runs))


def chromium() -> str | None:
    """Debian's chromium (`make setup` installs it), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@cache
def shots() -> Path:
    """Where the browser tests' screenshots go: $KNEURON_SCREENSHOTS (`make screenshots` sets it to
    docs/explore), else a temporary directory removed at exit, so a test run leaves the tree as it was."""
    if os.environ.get("KNEURON_SCREENSHOTS"):
        return Path(os.environ["KNEURON_SCREENSHOTS"])
    d = Path(tempfile.mkdtemp(prefix="kneuron-shots-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def shot(page, name: str, part: str | None = None, full: bool = False) -> None:
    """A screenshot (of the element ``part``, the whole page, or the top of it) as a 256-colour PNG,
    small enough for the README."""
    from PIL import Image
    d = shots()
    d.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    png = page.locator(part).screenshot() if part else page.screenshot(full_page=full)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(d / f"{name}.png", optimize=True)
    assert (d / f"{name}.png").stat().st_size < 200_000
