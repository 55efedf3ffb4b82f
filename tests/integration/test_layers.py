"""The import layers (pyproject.toml [tool.importlinter]) hold on the package, and the contracts really
catch what they are meant to: a lower layer importing a higher one (at the top of a file or inside a
function), an import cycle between siblings, a module with no layer, and a module importing the public
API. Each breach is injected into a temporary copy of the package; the tree itself is never touched."""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support.paths import ROOT

pytest.importorskip("importlinter")

LINT = ("import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv[0] = 'lint-imports'; lint_imports_command()")
CONTRACTS = {c["id"]: c["name"] for c in
             tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


def lint(project: Path) -> subprocess.CompletedProcess:
    """lint-imports with project/pyproject.toml on the package in project/src, in a fresh interpreter
    (so the kneuron already imported here is not the one analysed)."""
    env = {**os.environ, "PYTHONPATH": str(project / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo", str(project / "pyproject.toml")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def _only_python(folder, names):
    return [n for n in names if n == "__pycache__" or (Path(folder, n).is_file() and not n.endswith(".py"))]


@pytest.fixture
def copy(tmp_path):
    """A copy of the package's Python files and of pyproject.toml (data files are not needed)."""
    shutil.copytree(ROOT / "src" / "kneuron", tmp_path / "src" / "kneuron", ignore=_only_python)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(copy: Path, module: str, code: str) -> None:
    path = copy / "src" / "kneuron" / module
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


def test_every_folder_of_modules_is_a_regular_package():
    """import-linter (grimp) does not see a folder without __init__.py inside a package: its modules
    would silently escape every contract."""
    pkg = ROOT / "src" / "kneuron"
    bare = sorted(str(d.relative_to(pkg)) for d in pkg.rglob("*") if d.is_dir() and d.name != "__pycache__"
                  and any(d.glob("*.py")) and not (d / "__init__.py").exists())
    assert not bare, f"add an __init__.py to: {bare}"


def test_the_package_keeps_every_contract():
    res = lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_the_copy_keeps_every_contract(copy):
    res = lint(copy)
    assert res.returncode == 0, res.stdout + res.stderr


def _broken(res, contract: str, *lines: str) -> None:
    """lint-imports failed, the contract with that id among the broken ones, the lines in its report."""
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert f"{CONTRACTS[contract]} BROKEN" in " ".join(out.split()), out
    for line in lines:
        assert line in out, out


@pytest.mark.parametrize("module,code,chain", [
    # a lazy (function-level) upward import counts like a top-level one
    ("facts/schema.py", "def _upward():\n    from kneuron.cli import app\n    return app",
     "kneuron.facts.schema -> kneuron.cli"),
    ("models/sites.py", "from kneuron.attribution import attribute  # noqa", "kneuron.models.sites -> kneuron.attribution"),
    ("intervene.py", "def _upward():\n    import kneuron.organisms.train", "kneuron.intervene -> kneuron.organisms.train"),
    ("runs/store.py", "def _upward():\n    from kneuron.paper import likn", "kneuron.runs.store -> kneuron.paper.likn"),
    ("_version.py", "def _upward():\n    import kneuron.facts", "kneuron._version -> kneuron.facts"),
])
def test_an_upward_import_breaks_the_layers(copy, module, code, chain):
    _append(copy, module, code)
    _broken(lint(copy), "layers", chain)


def test_compute_siblings_may_import_each_other_but_not_in_a_cycle(copy):
    # neurons may import lens (a sibling); intervene importing probe (which imports intervene) closes a cycle
    _append(copy, "neurons.py", "def _sideways():\n    from kneuron.lens import Lens  # noqa")
    assert lint(copy).returncode == 0
    _append(copy, "intervene.py", "def _cycle():\n    from kneuron import probe  # noqa")
    _broken(lint(copy), "acyclic", "No cycles are allowed in kneuron.", ".intervene", ".probe")


def test_a_module_outside_every_layer_is_refused(copy):
    (copy / "src" / "kneuron" / "stray.py").write_text('"""a module no layer names"""\n')
    _broken(lint(copy), "layers", "kneuron.stray")


def test_no_module_imports_the_public_api(copy):
    _append(copy, "paper/report.py", "def _api():\n    from kneuron import load_model  # noqa")
    _broken(lint(copy), "public-api", "kneuron.paper.report -> kneuron")
