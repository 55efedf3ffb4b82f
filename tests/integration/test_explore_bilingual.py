"""The Prompt view's languages side by side, through HTTP, on a miniature organism trained on the toy
bilingual facts: each language's first query comes back with the library's predictions, attribution
and knowledge neurons (``localize``), the overlap is the intersection of the two languages' neurons,
a language the fact lacks is a note, and the fact list carries ``known_facts``' marks."""
import pytest

from support.explore_fixtures import bilingual_site, call, wait_job
from support.tiny import bilingual_facts
from kneuron import attribute
from kneuron.neurons import LocateConfig, localize
from kneuron.organisms.known import known_facts
from kneuron.probe import answer_prob, predict

pytestmark = pytest.mark.usefixtures("one_thread")
MINI = "mini-clm"
STEPS = 3


@pytest.fixture(scope="module")
def app(mini_organism, tmp_path_factory):
    """(url, handle, fact file, fact file with c1 in English only): the miniature organism offered."""
    with bilingual_site(mini_organism, tmp_path_factory, MINI, lacking="c1") as site:
        yield site


def run(url: str, body: dict) -> dict:
    code, job = call(url, "/api/bilingual", body)
    assert code == 200, job
    job = wait_job(url, job)
    assert job["state"] == "done", job["error"]
    assert job["done"] == job["total"] > 0
    return job["result"]


def test_both_languages_come_back_with_the_librarys_numbers_and_the_overlap_is_the_intersection(app):
    url, h, path, _ = app
    out = run(url, {"model": MINI, "fact": "c2", "facts": path, "steps": STEPS})    # Spain: neurons shared
    assert out["langs"] == ["en", "zh"] and [s["lang"] for s in out["sides"]] == ["en", "zh"]
    cfg = LocateConfig(steps=STEPS)
    sets = {}
    for side, fact in zip(out["sides"], [f for f in bilingual_facts() if f.id == "c2"]):
        q = fact.first_query("causal")
        assert (side["prompt"], side["answer"], side["lang"]) == (q.prompt, q.target, fact.lang)
        assert side["n_prompts"] == len(fact.templates) == 2
        assert [(t["token"], t["p"]) for t in side["prediction"]["top"]] == predict(h, q.prompt, 10)
        assert side["prediction"]["answer"]["p"] == answer_prob(h, q.prompt, q.target).prob
        assert len(side["prediction"]["lens"]) == h.n_layers
        atts: list = []
        ns = localize(h, fact, cfg, attributions=atts)          # the heatmap is localize's first attribution
        a = atts[0]
        assert [(n["layer"], n["index"], n["score"]) for n in side["attribution"]["top"]] == a.top(20)
        single = attribute(h, q.prompt, q.target, steps=STEPS)   # ... the first query's, batched beside the others
        assert [(l, i) for l, i, _ in a.top(20)] == [(l, i) for l, i, _ in single.top(20)]
        assert abs(a.scores - single.scores).max() < 1e-5 * float(single.scores.abs().max())
        assert len(side["attribution"]["scores"]) == h.n_layers and len(side["attribution"]["scores"][0]) == h.n_neurons
        assert [(n["layer"], n["index"]) for n in side["neurons"]] == ns.neurons
        assert [n["score"] for n in side["neurons"]] == ns.scores
        assert side["known"] == bool(known_facts(h, [fact]))
        sets[fact.lang] = set(ns.neurons)
    shared = sets["en"] & sets["zh"]
    assert {(n["layer"], n["index"]) for n in out["likn"]["neurons"]} == shared
    assert out["likn"]["count"] == len(shared)
    assert sum(out["likn"]["layers"].values()) == len(shared) and out["note"] is None
    assert shared and shared < sets["en"] and shared < sets["zh"]      # an overlap, not a whole side


def test_prompts_limits_the_queries_localize_reads(app):
    url, h, path, _ = app
    out = run(url, {"model": MINI, "fact": "c2", "facts": path, "steps": STEPS, "method": "amig", "prompts": 1,
                    "langs": "zh,en"})
    assert [s["lang"] for s in out["sides"]] == ["zh", "en"] and out["method"] == "amig"
    cfg = LocateConfig(method="amig", steps=STEPS)
    sets = [set(localize(h, f, cfg, max_prompts=1).neurons) for f in bilingual_facts() if f.id == "c2"]
    assert all(s["n_prompts"] == 1 for s in out["sides"])
    assert {(n["layer"], n["index"]) for n in out["likn"]["neurons"]} == sets[0] & sets[1]
    assert sets[0] & sets[1] and sets[0] != sets[1]


def test_a_fact_missing_in_one_language_shows_the_other_alone(app):
    url, h, _, no_zh = app
    out = run(url, {"model": MINI, "fact": "c1", "facts": no_zh, "steps": STEPS})
    en, zh = out["sides"]
    assert zh["missing"] and "no zh version" in zh["note"] and "prediction" not in zh
    fact = next(f for f in bilingual_facts() if f.id == "c1" and f.lang == "en")
    assert [(n["layer"], n["index"]) for n in en["neurons"]] == localize(h, fact, LocateConfig(steps=STEPS)).neurons
    assert out["likn"] is None and "every language" in out["note"]


@pytest.mark.parametrize("body, message", [
    ({"fact": "c99"}, "no fact with id 'c99'"),
    ({"fact": "c0", "langs": ["en"]}, "two or more different languages"),
    ({"fact": "c0", "langs": ["en", "en"]}, "two or more different languages"),
    ({"fact": "c0", "prompts": 0}, "prompts must be at least 1"),
    ({"fact": "c0", "method": "nope"}, "unknown method"),
    ({"fact": "c0", "steps": "many"}, "steps must be a whole number"),
    ({"fact": "c0", "facts": "/no/such/facts.jsonl"}, "facts.jsonl"),
])
def test_bad_input_is_one_line(app, body, message):
    url, _, path, _ = app
    code, out = call(url, "/api/bilingual", {"model": MINI, "facts": path, **body})
    assert code == 400 and message in out["error"] and "\n" not in out["error"]


def test_the_fact_list_is_marked_by_known_facts(app):
    url, h, path, _ = app
    q = f"/api/facts?model={MINI}&facts={path}"
    code, out = call(url, q)
    if not out["known_computed"]:
        assert wait_job(url, out["building"])["state"] == "done"
        code, out = call(url, q)
    assert code == 200 and out["known_computed"] and out["langs"] == ["en", "zh"]
    facts = bilingual_facts()
    assert [e["id"] for e in out["list"]] == list(dict.fromkeys(f.id for f in facts))
    known = {f.key for f in known_facts(h, facts)}
    assert {(e["id"], lang): m["known"] for e in out["list"] for lang, m in e["langs"].items()} == {
        f.key: f.key in known for f in facts}
    assert out["list"][0]["langs"]["zh"]["subject"] == "法国"
    one = call(url, q + "&per_relation=1")[1]            # a new list: its own marks
    if not one["known_computed"]:
        wait_job(url, one["building"])
        one = call(url, q + "&per_relation=1")[1]
    assert [e["id"] for e in one["list"]] == ["c0", "l0"]
