"""kneuron explore's server, through HTTP: its numbers are the library's, bad input is one readable
line and the server goes on, one computation per model, jobs can be cancelled."""
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from support.explore_fixtures import ANSWER, CLM, PROMPT, call, explorer, make_run, serving, wait_job
from kneuron.probe import answer_prob, predict
from kneuron import attribute, suppress
from kneuron.explore import check_host
from kneuron.lens import logit_lens, value_index
from kneuron.paper.table1 import edit_effect, first_prompt, unrelated_partner


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, explorer, handle): organism-clm offered, a small run of it opened at start."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # tiny models on a shared 2-core CPU: one thread is far faster
    x = explorer([CLM])
    h = x.models.handle(CLM)
    run = make_run(h, tmp_path_factory.mktemp("run") / "run")
    x.open_run({"path": str(run)})
    try:
        with serving(x) as url:
            yield url, x, h
    finally:
        torch.set_num_threads(threads)


def test_predict_is_the_librarys(app):
    url, _, h = app
    code, out = call(url, "/api/predict", {"model": CLM, "prompt": PROMPT, "answer": ANSWER})
    assert code == 200
    assert [(t["token"], t["p"]) for t in out["top"]] == predict(h, PROMPT, 10)
    assert out["answer"]["p"] == answer_prob(h, PROMPT, ANSWER).prob
    lens = logit_lens(h, PROMPT, k=5)
    assert [[t["token"] for t in x["after"]] for x in out["lens"]] == [[t for t, _ in x.after] for x in lens.layers]
    assert out["updates"][0]["neuron"] == "L{}N{}".format(*lens.updates[0][:2])


@pytest.mark.parametrize("path, body, message", [
    ("/api/predict", {"model": CLM, "prompt": "  "}, "the prompt is empty"),
    ("/api/predict", {"model": CLM, "prompt": PROMPT, "answer": "🦄"}, "cannot be encoded"),
    ("/api/predict", {"model": "no-such-model", "prompt": PROMPT}, "not offered"),
    ("/api/neuron", {"model": CLM, "neuron": "neuron 5"}, "unknown neuron"),
    ("/api/neuron", {"model": CLM, "neuron": "L99N0"}, "layer 99 is out of range"),
    ("/api/neuron", {"model": CLM, "neuron": "L1N99999"}, "neuron 99999 is out of range"),
    ("/api/intervene", {"model": CLM, "prompt": PROMPT, "changes": [{"neuron": "L1N2", "factor": "x"}]}, "not a number"),
    ("/api/runs/open", {"path": "/nonexistent/run"}, "holds no run"),
    ("/api/attribute", {"model": CLM, "prompt": PROMPT, "method": "nope"}, "unknown method"),
    ("/api/values/search", {"model": CLM, "token": "Ottawa Warsaw"}, "not one token"),
    ("/api/edit", {"model": CLM, "fact": "P36-999", "new": "Rome"}, "no fact with id 'P36-999'"),
    ("/api/edit", {"model": CLM, "fact": "P36-008", "new": "Bytown"}, "is the fact's own object"),
    ("/api/edit", {"model": CLM, "fact": "P36-008", "new": "🦄"}, "cannot be encoded"),
    ("/api/edit", {"model": CLM, "fact": "P36-008", "new": "Rome", "method": "nope"}, "unknown editing method"),
    ("/api/edit/undo", {"model": CLM}, "has no edit applied"),
])
def test_bad_input_is_one_readable_line_and_the_server_goes_on(app, caplog, path, body, message):
    url = app[0]
    with caplog.at_level("WARNING", logger="kneuron.explore"):
        code, out = call(url, path, body)
    assert code == 400 and message in out["error"] and "\n" not in out["error"]
    assert [r for r in caplog.records if message in r.getMessage()]
    assert call(url, "/api/predict", {"model": CLM, "prompt": PROMPT})[0] == 200


def test_a_directory_that_is_not_a_run(app, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    code, out = call(app[0], "/api/runs/open", {"path": str(tmp_path)})
    assert code == 400 and "no run" in out["error"]


def test_attribution_job_gives_the_librarys_scores(app):
    url, _, h = app
    code, job = call(url, "/api/attribute", {"model": CLM, "prompt": PROMPT, "answer": ANSWER, "steps": 5})
    assert code == 200 and job["state"] == "running"
    job = wait_job(url, job)
    assert job["state"] == "done" and job["done"] == job["total"] == h.n_layers * 5
    a = attribute(h, PROMPT, ANSWER, steps=5)
    res = job["result"]
    assert [(n["layer"], n["index"], n["score"]) for n in res["top"]] == a.top(20)
    assert res["prob"] == a.prob and len(res["scores"]) == h.n_layers and len(res["scores"][0]) == h.n_neurons


def test_cancelled_attribution_leaves_the_model_clean(app):
    url, _, h = app
    before = call(url, "/api/predict", {"model": CLM, "prompt": PROMPT, "answer": ANSWER})[1]
    job = call(url, "/api/attribute", {"model": CLM, "prompt": PROMPT, "answer": ANSWER, "method": "amig",
                                       "steps": 400})[1]
    call(url, f"/api/jobs/{job['id']}/cancel", {})
    assert wait_job(url, job)["state"] == "cancelled"
    assert call(url, "/api/predict", {"model": CLM, "prompt": PROMPT, "answer": ANSWER})[1] == before


def test_two_tabs_at_once(app):
    url = app[0]
    results = []

    def tab(prompt):
        results.append(call(url, "/api/predict", {"model": CLM, "prompt": prompt}))
    tabs = [threading.Thread(target=tab, args=(p,)) for p in (PROMPT, "The capital of Poland is") * 3]
    for t in tabs:
        t.start()
    for t in tabs:
        t.join()
    assert [code for code, _ in results] == [200] * 6


def test_intervention_is_the_librarys(app):
    url, _, h = app
    body = {"model": CLM, "prompt": PROMPT, "answer": ANSWER,
            "changes": [{"neuron": "L3N853", "factor": 0}, {"neuron": "L2N5", "factor": 2}, {"neuron": "L1N9", "factor": 0}]}
    code, out = call(url, "/api/intervene", body)
    assert code == 200
    assert out["before"]["answer"]["p"] == answer_prob(h, PROMPT, ANSWER).prob
    from kneuron import enhance
    with suppress(h, [(3, 853), (1, 9)]), enhance(h, [(2, 5)], 2.0):
        assert out["after"]["answer"]["p"] == answer_prob(h, PROMPT, ANSWER).prob
        assert out["after"]["top"][0]["token"] == predict(h, PROMPT, 1)[0][0]


def test_value_search_builds_the_index_once(app, tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path))
    url, x, h = app
    x.indexes.pop(CLM, None), x.index_jobs.pop(CLM, None)
    code, out = call(url, "/api/values/search", {"model": CLM, "token": "Ottawa"})
    assert code == 200 and "building" in out
    assert wait_job(url, out["building"])["state"] == "done"
    out = call(url, "/api/values/search", {"model": CLM, "token": "Ottawa"})[1]
    expected = value_index(h).search(h.tokenizer("Ottawa", add_special_tokens=False)["input_ids"][0], 30)
    assert [(n["layer"], n["index"], n["rank"], n["logit"]) for n in out["neurons"]] == expected


def test_run_view_reads_the_run(app):
    url, x, h = app
    runs = call(url, "/api/runs")[1]["runs"]
    assert len(runs) == 1 and runs[0]["model"] == CLM
    run = call(url, f"/api/runs/{runs[0]['id']}")[1]
    assert [(f["id"], f["lang"]) for f in run["facts"]] == [("P36-008", "en"), ("P36-008", "zh"),
                                                              ("P36-013", "en"), ("P36-013", "zh")]
    view = x.runs[runs[0]["id"]]
    fact = call(url, f"/api/runs/{run['id']}/facts/0")[1]
    assert [(n["layer"], n["index"]) for n in fact["neurons"]] == view.run.neurons[("P36-008", "en")]
    assert sum(run["histogram"]["kn"]) == sum(len(v) for v in view.run.neurons.values())
    n = fact["neurons"][0]
    found = call(url, "/api/neuron", {"model": CLM, "neuron": f"L{n['layer']}N{n['index']}"})[1]["facts"]
    assert {"id": "P36-008", "lang": "en", "rank": 0} == {k: found[0][k] for k in ("id", "lang", "rank")}
    effects = call(url, f"/api/runs/{run['id']}/facts/0/measure", {})[1]
    facts = view.run.facts
    g = facts[unrelated_partner(facts)[0][0]]
    p = [answer_prob(h, *first_prompt(h, f)).prob for f in (facts[0], g)]
    assert effects == edit_effect(h, facts[0], g, view.run.neurons[facts[0].key], *p).row()
    assert call(url, f"/api/runs/{run['id']}/facts/9")[0] == 400


def test_edit_is_the_librarys_and_undo_restores_every_bit(app):
    url, x, h = app
    from kneuron.editing.show import prepare
    from kneuron.explore.api import _edit_facts
    weights = {k: v.clone() for k, v in h.model.state_dict().items()}
    body = {"model": CLM, "fact": "P36-008", "new": "Mexico City", "method": "kn"}
    code, out = call(url, "/api/edit", body)
    assert code == 200 and [ln["what"] for ln in out["lines"]] == ["rewrite", "paraphrase", "neighbour", "other language"]
    assert call(url, "/api/models")[1]["edits"][CLM]["label"] == "kn P36-008 (en): Ottawa → Mexico City"
    edited = call(url, "/api/predict", {"model": CLM, "prompt": PROMPT})[1]["top"]
    assert call(url, "/api/edit/undo", {"model": CLM}) == (200, {"model": CLM, "undone": out["label"]})
    assert all(torch.equal(v, weights[k]) for k, v in h.model.state_dict().items())
    assert call(url, "/api/models")[1]["edits"] == {}
    with x.models.use(CLM):                               # the same edit by hand, with the library
        shown = prepare(h, *_edit_facts(h), "P36-008", "Mexico City", method="kn")
        with shown.edit:
            mine = shown.report(shown.measure())
            assert [(t["token"], t["p"]) for t in edited] == predict(h, PROMPT, 10)
    assert out["lines"] == mine["lines"] and out["neurons"] == [list(n) for n in mine["neurons"]]
    assert out["params_changed"] == mine["params_changed"] > 0
    rewrite = out["lines"][0]
    assert rewrite["after"]["p_want"] > 10 * rewrite["before"]["p_want"]


def test_meta_serves_the_method_registries(app):
    """/api/meta: the editing registry (names in order, one-line help, capabilities, options with their
    types and defaults) and the attribution methods; the page's selects start empty and are filled from it."""
    from kneuron.attribution.methods import METHODS as ATTRIBUTION
    from kneuron.editing import METHODS
    from kneuron.explore.app import STATIC
    code, meta = call(app[0], "/api/meta")
    assert code == 200 and [m["name"] for m in meta["editing"]] == list(METHODS)
    assert [m["name"] for m in meta["attribution"]] == list(ATTRIBUTION)
    for m in meta["editing"]:
        cls = METHODS[m["name"]]
        assert m["help"] == cls.help and m["causal_only"] is cls.causal_only and m["batch_rule"] == cls.batch_rule
        assert m["uses_neurons"] is cls.uses_neurons and m["languages"] == cls.languages
        assert [o["name"] for o in m["options"]] == [f.name for f in fields(cls)]
    rome = {o["name"]: o for o in next(m for m in meta["editing"] if m["name"] == "rome")["options"]}
    assert rome["layer"] == {"name": "layer", "type": "int | None", "default": None}
    amig = next(m for m in meta["attribution"] if m["name"] == "amig")
    assert {o["name"]: o["default"] for o in amig["options"]} == {"paths": "mean", "prefactor": "activation",
                                                                  "normalize": False}
    from kneuron.models.registry import CARDS
    assert meta["models"] == [{"name": c.name, "kind": c.kind, "languages": list(c.languages)} for c in CARDS.values()]
    assert {"name": "organism-clm", "kind": "causal", "languages": ["en", "zh"]} in meta["models"]
    assert {"name": "gemma3-270m", "kind": "causal", "languages": ["en", "zh"]} in meta["models"]   # issue 20
    from kneuron.explore import DEFAULT_MODELS
    assert DEFAULT_MODELS == [m["name"] for m in meta["models"]]       # the models offered by default: the same cards
    page = (STATIC / "index.html").read_text()
    assert '<select id="method"></select>' in page and '<select id="edit-method"></select>' in page
    assert "<option>" not in page                                     # no method list hard-coded


def test_hosts_other_than_the_loopback_are_warned_about():
    assert check_host("127.0.0.1") is None and check_host("localhost") is None
    assert "anyone" in check_host("0.0.0.0")


@pytest.mark.slow
def test_cli_prints_the_url_and_serves(tmp_path):
    p = subprocess.Popen([str(Path(sys.executable).parent / "kneuron"), "explore", "--model", CLM, "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("kneuron explore: http://127.0.0.1:")
        url = line.split()[2].rstrip("/")
        assert call(url, "/api/models")[1]["models"][0]["name"] == CLM
    finally:
        p.terminate()
        p.wait(10)
