"""Per-fact problems (issue 11): a prompt longer than the model's context is refused before any model
work, in one line naming the fact, its length and the limit; `--skip-invalid` / ``skip_invalid=True``
skips every fact that cannot be used (too long, an answer the tokenizer cannot encode, no template a
causal model can use), records each with its reason in run.json, and locates the others exactly as a
run of only those would."""
import json

import pytest
import torch
import transformers as T
from typer.testing import CliRunner

import kneuron.runs.locate as loc
from kneuron import LocateConfig, load_facts, locate
from kneuron.facts import Fact, fact_file_hash
from kneuron.facts.templates import QueryError
from kneuron.models import from_model
from kneuron.runs.locate import check_fact, check_facts
from support.tiny import FAMILIES, word_tokenizer

CONTEXT = 64
CAPITAL = "the capital of [X] is [Y] ."
LANGUAGE = "the language spoken in [X] is [Y] ."
LONG = " ".join(["france", "italy"] * 40)           # 80 words: the prompt alone is beyond 64 tokens


def small_context_model(family: str, n: int = CONTEXT):
    """A tiny random model whose config allows ``n`` positions."""
    kind, make = FAMILIES[family]
    torch.manual_seed(0)
    cfg = make()
    cfg.max_position_embeddings = n           # GPT-2: n_positions, through its attribute map
    cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = 0, 5, 6
    cls = T.AutoModelForMaskedLM if kind == "masked" else T.AutoModelForCausalLM
    return cls.from_config(cfg).float().eval(), kind


def small_context_handle(family: str = "gpt2", n: int = CONTEXT):
    model, kind = small_context_model(family, n)
    return from_model(model, word_tokenizer(kind), kind=kind, name=f"tiny-{family}-{n}")


def line(id, subject, obj, *templates, relation="P36"):
    return {"id": id, "relation": relation, "lang": "en", "subject": subject, "object": obj,
            "templates": list(templates)}


GOOD = [line("c1", "france", "paris", CAPITAL), line("l1", "germany", "german", LANGUAGE, relation="P37"),
        line("c2", "italy", "rome", CAPITAL, "[X] capital is [Y]"), line("c3", "spain", "madrid", CAPITAL)]
BAD = {"long": line("x-long", LONG, "rome", CAPITAL),                       # 3 + 80 + 1 = 84 tokens > 64
       "unk": line("x-unk", "spain", "london", CAPITAL),                    # "london" is [UNK]
       "template": line("x-tmpl", "italy", "rome", "[Y] is the capital of [X] .")}
# the bad facts between the good ones, so that a wrong order would show
MIXED = [GOOD[0], BAD["long"], GOOD[1], BAD["unk"], GOOD[2], BAD["template"], GOOD[3]]


def write(path, lines):
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def no_model_work(monkeypatch, handle=None):
    """Any forward pass or attribution from here on fails the test."""
    def boom(*a, **k):
        raise AssertionError("model work before the facts were checked")
    monkeypatch.setattr(loc, "locate_facts", boom)
    monkeypatch.setattr(T.GPT2LMHeadModel, "forward", boom)
    monkeypatch.setattr(T.BertForMaskedLM, "forward", boom)
    if handle is not None:
        monkeypatch.setattr(handle.model, "forward", boom)


def _locate(h, path, out, **kw):
    return locate(h, load_facts(path), LocateConfig(steps=2), out, facts_path=str(path),
                  facts_hash=fact_file_hash(path), show_progress=False, **kw)


# ----------------------------------------------------------------------------- the context limit

def test_the_handle_knows_its_context():
    assert small_context_handle("gpt2").max_positions == CONTEXT
    assert small_context_handle("bert", 40).max_positions == 40


def words(n: int) -> str:
    return " ".join(["france"] * n)


@pytest.mark.parametrize("obj,answer_tokens", [("paris", 1), ("dodoma tanzania", 2)])
def test_causal_input_is_prompt_and_answer_but_its_last_token(obj, answer_tokens):
    """Causal: prompt + answer - 1 tokens must fit. "the capital of <subject> is" is subject + 4 words."""
    h = small_context_handle("gpt2")
    fits = CONTEXT - 4 - (answer_tokens - 1)
    assert len(check_fact(h, Fact("a", "P36", "en", words(fits), obj, (CAPITAL,)))) == 1
    with pytest.raises(QueryError) as e:
        check_fact(h, Fact("b", "P36", "en", words(fits + 1), obj, (CAPITAL,)))
    assert f"{CONTEXT + 1} tokens" in str(e.value) and f"context of {CONTEXT} tokens" in str(e.value)


def test_masked_input_is_the_whole_sentence_with_special_tokens():
    """Masked: [CLS] the capital of <subject> is [MASK] . [SEP] is subject + 8 tokens."""
    h = small_context_handle("bert")
    fits = CONTEXT - 8
    assert len(check_fact(h, Fact("a", "P36", "en", words(fits), "paris", (CAPITAL,)))) == 1
    with pytest.raises(QueryError, match=f"is {CONTEXT + 1} tokens, more than the model's context of {CONTEXT}"):
        check_fact(h, Fact("b", "P36", "en", words(fits + 1), "paris", (CAPITAL,)))


def test_unknown_context_means_no_check():
    from support.tiny import tiny_handle
    h = tiny_handle("bloom")                  # ALiBi: its config names no context length
    assert h.max_positions is None
    assert check_fact(h, Fact("a", "P36", "en", words(500), "paris", (CAPITAL,)))


def test_too_long_prompt_is_refused_before_any_model_work(tmp_path, monkeypatch):
    h = small_context_handle("gpt2")
    path = write(tmp_path / "facts.jsonl", MIXED[:2])
    no_model_work(monkeypatch, h)
    out = tmp_path / "run"
    with pytest.raises(QueryError) as e:
        _locate(h, path, out)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:2: ") and "84 tokens" in msg and f"context of {CONTEXT} tokens" in msg
    assert "--skip-invalid" in msg
    assert not out.exists()


def test_tokenizing_a_9000_word_prompt_is_quick():
    """The user's case: a subject of ~9,000 words is measured and refused, without model work."""
    import time
    h = small_context_handle("gpt2")
    t0 = time.perf_counter()
    with pytest.raises(QueryError, match="9004 tokens"):
        check_fact(h, Fact("a", "P36", "en", words(9000), "paris", (CAPITAL,)))
    assert time.perf_counter() - t0 < 10


# ----------------------------------------------------------------------------- one skip switch

def test_strict_by_default_each_problem_is_one_line(tmp_path):
    h = small_context_handle("gpt2")
    for i, bad in enumerate(BAD.values()):
        path = write(tmp_path / f"f{i}.jsonl", [GOOD[0], bad])
        with pytest.raises(QueryError) as e:
            check_facts(h, load_facts(path))
        assert str(e.value).startswith(f"{path}:2: ") and "\n" not in str(e.value)


def test_skip_invalid_skips_the_three_and_locates_the_rest_as_alone(tmp_path):
    h = small_context_handle("gpt2")
    mixed = write(tmp_path / "mixed.jsonl", MIXED)
    good = write(tmp_path / "good.jsonl", GOOD)
    store = _locate(h, mixed, tmp_path / "skip", skip_invalid=True)
    alone = _locate(h, good, tmp_path / "alone")
    assert store.facts().num_rows == len(GOOD) and store.neurons().num_rows > 0
    assert store.facts().equals(alone.facts()) and store.neurons().equals(alone.neurons())
    # each skipped fact, in file order, with its one-line reason naming its file and line
    meta = json.loads((tmp_path / "skip" / "run.json").read_text())
    assert meta["skip_invalid"] is True
    assert meta["skipped"] == store.skipped
    assert [(s["fact_id"], s["lang"]) for s in store.skipped] == [("x-long", "en"), ("x-unk", "en"), ("x-tmpl", "en")]
    long, unk, tmpl = (s["reason"] for s in store.skipped)
    assert long.startswith(f"{mixed}:2: ") and "84 tokens" in long and f"context of {CONTEXT}" in long
    assert unk.startswith(f'{mixed}:4: field "object": ') and "london" in unk and "[UNK]" in unk
    assert tmpl.startswith(f'{mixed}:6: field "templates": ') and "no template usable by a causal model" in tmpl
    assert "[Y] must end the template" in tmpl
    assert all("\n" not in r and "--skip-invalid" not in r for r in (long, unk, tmpl))
    # the run's own facts are the ones it located
    kept = [json.loads(x)["id"] for x in (tmp_path / "skip" / "facts.jsonl").read_text().splitlines()]
    assert kept == [f["id"] for f in GOOD]
    assert alone.skipped == [] and json.loads((tmp_path / "alone" / "run.json").read_text())["skipped"] == []


def test_skipping_is_checked_before_model_work(tmp_path, monkeypatch):
    """Even with the switch, nothing runs on a fact set where every fact is bad; the error names the first."""
    h = small_context_handle("gpt2")
    path = write(tmp_path / "bad.jsonl", list(BAD.values()))
    no_model_work(monkeypatch, h)
    with pytest.raises(QueryError) as e:
        _locate(h, path, tmp_path / "run", skip_invalid=True)
    assert str(e.value).startswith(f"all 3 facts were skipped; the first: {path}:1: ") and "84 tokens" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_resume_keeps_the_skipped_list(tmp_path, monkeypatch):
    h = small_context_handle("gpt2")
    mixed = write(tmp_path / "mixed.jsonl", MIXED)
    full = _locate(h, mixed, tmp_path / "full", skip_invalid=True)
    first = _locate(h, mixed, tmp_path / "cut", skip_invalid=True, limit=3)       # c1, x-long, l1
    assert [s["fact_id"] for s in first.skipped] == ["x-long"] and first.facts().num_rows == 2
    resumed = _locate(h, mixed, tmp_path / "cut", skip_invalid=True, resume=True)
    assert resumed.n_new == 2 and resumed.skipped == full.skipped
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["skipped"] == full.skipped
    assert resumed.facts().equals(full.facts()) and resumed.neurons().equals(full.neurons())
    # resumed with a smaller limit: the facts skipped beyond it stay recorded
    again = _locate(h, mixed, tmp_path / "cut", skip_invalid=True, resume=True, limit=1)
    assert again.n_new == 0 and again.skipped == full.skipped


def test_the_ray_worker_checks_and_locates_the_same_way(tmp_path):
    """The Ray executor's worker (run here as a plain object): it returns the same Checked, and writes
    the parts of the kept facts as the local executor does."""
    from kneuron.attribution import Execution
    from kneuron.runs.ray import _Worker
    from kneuron.runs.store import RunStore
    model, kind = small_context_model("gpt2")
    model.save_pretrained(tmp_path / "m")
    word_tokenizer(kind).save_pretrained(tmp_path / "m")
    mixed = write(tmp_path / "mixed.jsonl", MIXED)
    fs = load_facts(mixed)
    cfg = LocateConfig(steps=2)
    w = _Worker(str(tmp_path / "m"), {}, cfg, Execution(), str(tmp_path / "ray"))
    checked = w.check(fs, True)
    local = check_facts(w.h, fs, True)
    assert [f.key for f in checked.facts] == [(g["id"], "en") for g in GOOD]
    assert checked.skipped == local.skipped and len(checked.skipped) == 3
    store = RunStore(tmp_path / "ray", meta={}, facts=checked.facts)
    assert sum(w.locate([g], True) for g in enumerate(checked.facts)) == len(GOOD)   # one fact per call, as local
    store.finalize()
    ref = locate(w.h, fs, cfg, tmp_path / "ref", skip_invalid=True, show_progress=False)
    assert store.facts().equals(ref.facts()) and store.neurons().equals(ref.neurons())
    assert not (tmp_path / "ray" / "queries.parquet").exists()         # a run.json without query_neurons: as before
    # a run that keeps each query's neurons (run.json says so): the worker writes them as the local executor
    w.out = str(tmp_path / "ray-q")
    store = RunStore(tmp_path / "ray-q", meta={"query_neurons": True}, facts=checked.facts)
    assert sum(w.locate([g], True) for g in enumerate(checked.facts)) == len(GOOD)
    store.finalize()
    assert store.queries().equals(ref.queries()) and store.queries().num_rows > 0


# ----------------------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-gpt2-64")
    model, kind = small_context_model("gpt2")
    model.save_pretrained(d)
    word_tokenizer(kind).save_pretrained(d)
    return d


def cli(*args):
    from kneuron.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_refuses_a_too_long_prompt_in_one_line(model_dir, tmp_path, monkeypatch):
    path = write(tmp_path / "facts.jsonl", MIXED[:2])
    no_model_work(monkeypatch)
    out = tmp_path / "run"
    r = cli("locate", "-f", path, "-o", out, "-m", model_dir, "--steps", 2, "--json")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"kneuron: error: {path}:2: ")
    assert "84 tokens" in r.stderr and f"context of {CONTEXT} tokens" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--skip-invalid", "--skip-invalid-templates"])
def test_cli_skip_invalid_counts_the_skipped(model_dir, tmp_path, flag):
    mixed = write(tmp_path / "mixed.jsonl", MIXED)
    r = cli("locate", "-f", mixed, "-o", tmp_path / "run", "-m", model_dir, "--steps", 2, "--json", flag)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    j = json.loads(r.stdout)
    assert j["skipped"] == 3 and j["n_facts"] == len(GOOD)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [s["fact_id"] for s in meta["skipped"]] == ["x-long", "x-unk", "x-tmpl"]
    assert all(s["reason"].startswith(f"{mixed}:") for s in meta["skipped"])


def test_cli_text_summary_names_the_skipped(model_dir, tmp_path):
    mixed = write(tmp_path / "mixed.jsonl", MIXED)
    r = cli("locate", "-f", mixed, "-o", tmp_path / "run", "-m", model_dir, "--steps", 2, "--skip-invalid")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert f"{len(GOOD)} facts in" in r.stdout and "3 facts skipped" in r.stdout
    skipped = [x for x in r.stderr.splitlines() if x.startswith("skipped: ")]
    assert len(skipped) == 3 and f"{mixed}:4:" in skipped[1]


def test_direct_attribute_and_answer_prob_refuse_a_too_long_prompt_before_model_work(monkeypatch):
    """The library calls (not only locate) check the context before any forward pass."""
    from kneuron.attribution import attribute, attribute_many
    from kneuron.probe import answer_prob
    h = small_context_handle("gpt2")
    no_model_work(monkeypatch, h)
    long_prompt = "the capital of " + words(CONTEXT) + " is"
    for call in (lambda: attribute(h, long_prompt, "paris"),
                 lambda: attribute_many(h, [("the capital of france is", "paris"), (long_prompt, "paris")]),
                 lambda: answer_prob(h, long_prompt, "paris")):
        with pytest.raises(QueryError, match=f"more than the model's context of {CONTEXT} tokens"):
            call()
