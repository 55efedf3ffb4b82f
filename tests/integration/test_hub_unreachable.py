"""A hub that cannot be reached, for real: HF_ENDPOINT at a loopback port nothing listens on, HF_HUB_OFFLINE
unset, an empty Hugging Face cache. Fresh processes, since the hub client reads HF_ENDPOINT when imported.

An uncached id fails with kneuron's one line and nothing else, in seconds (the hub client alone would retry
for half a minute, a dozen lines on stderr); a cached one loads from the cache, as quietly."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from support.cli import tiny_dir  # noqa: F401 (a fixture)
from support.paths import ROOT

KNEURON = Path(sys.executable).parent / "kneuron"
UNCACHED, CACHED = "some-org/not-cached", "some-org/cached"
HUB_SECONDS = 5          # what an unreachable hub may cost beyond the start of the process

LOAD = """
import json, sys, time
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer   # imported before the clock starts
from kneuron.errors import KneuronError
from kneuron.models.load import load_model
out = []
for name in sys.argv[1:]:
    t = time.perf_counter()
    try:
        row = {"loaded": load_model(name).name}
    except Exception as e:
        row = {"error": type(e).__name__, "kneuron": isinstance(e, KneuronError), "message": str(e)}
    out.append({**row, "seconds": time.perf_counter() - t})
print(json.dumps(out))
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tmp_path) -> dict:
    """Online as far as the hub client knows, its endpoint a closed loopback port, its cache empty."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                             "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "KNEURON_VERBOSE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]))
    return env


def timed(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    return p, time.perf_counter() - t


def cache_holding(hf_home: Path, repo_id: str, model_dir: str) -> None:
    """``model_dir``'s files as the hub client caches ``repo_id``: a snapshot named by a commit, refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_cli_uncached_id_is_one_line_within_seconds(tmp_path):
    env = environment(tmp_path)
    p, took = timed([str(KNEURON), "probe", "Hello", "--model", UNCACHED], env)
    assert p.returncode != 0 and p.stdout == ""
    assert p.stderr.startswith("kneuron: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert UNCACHED in p.stderr and env["HF_ENDPOINT"] in p.stderr and "Retry" not in p.stderr
    # the same command on a missing directory: the same imports, no hub; the difference is the hub's cost
    base, start = timed([str(KNEURON), "probe", "Hello", "--model", str(tmp_path / "no" / "such" / "dir")], env)
    assert base.returncode == 2 and "model directory not found" in base.stderr
    assert took - start < HUB_SECONDS, (took, start)


def test_api_uncached_raises_fast_and_quietly_and_cached_loads(tmp_path, tiny_dir):  # noqa: F811
    """load_model in one process: a local directory first (it also pays for transformers' lazy imports of
    the model classes, which are not the hub's cost), then the uncached id, then a cached one."""
    env = environment(tmp_path)
    cache_holding(tmp_path / "hf", CACHED, tiny_dir)
    p = subprocess.run([sys.executable, "-c", LOAD, tiny_dir, UNCACHED, CACHED], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0 and p.stderr == "", p.stderr                  # nothing printed by anyone
    local, failed, loaded = json.loads(p.stdout)
    assert local.get("loaded") == str(Path(tiny_dir).resolve()), local
    assert failed["error"] == "ModelLoadError" and failed["kneuron"] and "\n" not in failed["message"]
    assert UNCACHED in failed["message"] and env["HF_ENDPOINT"] in failed["message"]
    assert failed["seconds"] < HUB_SECONDS, failed
    assert loaded.get("loaded") == CACHED and loaded["seconds"] < HUB_SECONDS, loaded


FIRST_IMPORTS = """
import sys
from kneuron.cli import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(code, sorted(m for m in ("torch", "transformers", "scipy") if m in sys.modules))
"""


def test_cli_fails_on_the_hub_before_importing_torch(tmp_path):
    """What makes the one line fast: the command line imports a command's module when it runs, and checks a hub
    id before the library (torch, transformers, scipy) is imported; a local model still loads them."""
    env = environment(tmp_path)
    p = subprocess.run([sys.executable, "-c", FIRST_IMPORTS, "probe", "Hello", "--model", UNCACHED],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.stdout.split("\n")[0] == "2 []", (p.stdout, p.stderr)
    assert p.stderr.startswith("kneuron: error: ") and p.stderr.count("\n") == 1, p.stderr


def test_the_public_api_is_imported_on_first_use():
    """`import kneuron` is light; each name of the public API is the library's own object when first used, and
    an unknown name is an AttributeError."""
    code = ("import sys, kneuron; light = 'torch' not in sys.modules; "
            "from kneuron.models.load import load_model; from kneuron.runs.store import open_run; "
            "import kneuron.models as m; "
            "print(light, kneuron.load_model is load_model is m.load_model, kneuron.open_run is open_run, "
            "set(kneuron.__all__) <= set(dir(kneuron)), hasattr(kneuron, 'no_such_name'), "
            "all(getattr(kneuron, n) is not None for n in kneuron.__all__))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])})
    assert p.stdout.split() == ["True", "True", "True", "True", "False", "True"], (p.stdout, p.stderr)
