"""kneuron explore in a real headless Chromium (Debian's `chromium`, driven by Playwright): each view
shows the library's numbers, bad input shows a message and the page goes on. Takes the screenshots of
docs/explore/: into a temporary directory, or into $KNEURON_SCREENSHOTS (`make screenshots` sets it to
docs/explore), so that running the suite leaves the working tree as it was."""
import os
import threading

import pytest
import torch

from support.explore_fixtures import ANSWER, CLM, PROMPT, chromium, explorer, make_run, serving, shot
from kneuron.probe import answer_prob, predict
from kneuron import attribute, suppress
from kneuron.lens import logit_lens, token_id, value_index
from kneuron.paper.table1 import edit_effect, first_prompt, unrelated_partner

pytestmark = pytest.mark.slow
SMOL = "smollm2-135m"
WAIT = 240_000                       # ms: smollm2 loads in 16 s on an idle 2-core CPU, minutes on a busy one


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(url, explorer, run directory): smollm2-135m (loading in the background) and organism-clm."""
    if chromium() is None:
        pytest.skip("no chromium: apt-get install chromium (make setup does)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # on a shared 2-core CPU one thread is far faster
    cache = os.environ.get("KNEURON_CACHE")
    os.environ["KNEURON_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    x = explorer([SMOL, CLM])
    threading.Thread(target=x.models.handle, args=(SMOL,), daemon=True).start()
    run = make_run(x.models.handle(CLM), tmp_path_factory.mktemp("run") / "run")
    try:
        with serving(x) as url:
            yield url, x, run
    finally:
        torch.set_num_threads(threads)
        if cache is None:
            os.environ.pop("KNEURON_CACHE")
        else:
            os.environ["KNEURON_CACHE"] = cache


@pytest.fixture(scope="module")
def page(site):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1200, "height": 760})
        pg.set_default_timeout(60_000)
        pg.goto(site[0] + "/#/prompt")
        yield pg
        browser.close()


def value(page, selector: str) -> float:
    return float(page.locator(selector).get_attribute("data-value"))


def ask(page, model: str, prompt: str, answer: str = "") -> None:
    page.goto(page.url.split("#")[0] + "#/prompt")
    page.select_option("#model", model)
    page.evaluate("document.querySelector('#top').replaceChildren()")
    page.fill("#prompt", prompt)
    page.fill("#answer", answer)
    page.click("#predict")


def test_prompt_view_on_smollm2(page, site):
    ask(page, SMOL, "The capital of France is", "Paris")
    first = page.locator("#top tr:first-child code.token")
    first.wait_for(timeout=WAIT)
    with site[1].models.use(SMOL) as h:          # the library's numbers, the model held as the server holds it
        top = predict(h, "The capital of France is", 10)
        assert first.get_attribute("data-token") == " Paris" == top[0][0]
        assert value(page, "#top tr:first-child .num") == top[0][1]
        assert value(page, "#answer-prob") == answer_prob(h, "The capital of France is", "Paris").prob
    assert page.locator("#lens tr").count() == h.n_layers + 1
    shot(page, "prompt", full=True)
    page.click("#predict")                                               # again, the model loaded
    page.wait_for_function("document.querySelector('#busy').textContent === ''")
    print(f"\nsmollm2: predictions + logit lens shown {page.locator('#busy').get_attribute('data-ms')} ms after submit")
    page.click("#attribute")
    page.locator("#heatmap[data-drawn-ms]").wait_for(timeout=WAIT)       # all 30 x 1,536 neurons
    print(f"smollm2: heatmap of {h.n_layers} x {h.n_neurons} drawn in {page.locator('#heatmap').get_attribute('data-drawn-ms')} ms")
    assert page.locator("#heatmap .hoverlayer").count() == 1
    shot(page, "attribution", part="#attribution")


def test_attribution_heatmap_on_the_organism(page, site):
    ask(page, CLM, PROMPT, ANSWER)
    page.locator("#top tr").first.wait_for()
    page.fill("#steps", "10")
    page.click("#attribute")
    page.locator("#heatmap[data-drawn-ms]").wait_for(timeout=WAIT)
    with site[1].models.use(CLM) as h:
        top = attribute(h, PROMPT, ANSWER, steps=10).top(20)
    links = page.locator("#top-neurons a.neuron")
    assert links.all_inner_texts() == [f"L{l}N{i}" for l, i, _ in top]
    assert [value(page, f"#top-neurons li:nth-child({k + 1}) .num") for k in range(3)] == [s for *_, s in top[:3]]


def test_neuron_off_drops_the_answer_by_the_librarys_amount(page, site):
    page.locator("#top-neurons a.neuron").first.click()                  # the top neuron of the organism's attribution
    page.locator("#neuron-activation").wait_for()
    l, i = map(int, page.locator("#neuron-title").inner_text().split()[0][1:].split("N"))
    page.click("#iv-clear")
    page.click("#iv-off")
    page.click("#iv-run")
    page.locator("#iv-answer-delta .num").wait_for()
    with site[1].models.use(CLM) as h:
        assert value(page, "#neuron-activation") == pytest.approx(float(logit_lens(h, PROMPT).activations[l, i]), rel=1e-6)
        p0 = answer_prob(h, PROMPT, ANSWER).prob
        with suppress(h, [(l, i)]):
            p1 = answer_prob(h, PROMPT, ANSWER).prob
    assert (value(page, "#iv-answer-before .num"), value(page, "#iv-answer-after .num")) == (p0, p1)
    assert value(page, "#iv-answer-delta .num") == pytest.approx(p1 - p0, abs=1e-12) and p1 < p0
    page.fill("#iv-add-name", "L0N430")                                  # several neurons at once
    page.click("#iv-add")
    page.click("#iv-run")
    page.wait_for_function("document.querySelector('#iv-answer-after .num').dataset.value != String(%r)" % p1)
    with site[1].models.use(CLM) as h, suppress(h, [(l, i), (0, 430)]):
        assert value(page, "#iv-answer-after .num") == answer_prob(h, PROMPT, ANSWER).prob
    shot(page, "neuron", full=True)


def test_run_view_filters_facts(page, site):
    url, x, run = site
    page.goto(url + "/#/run")
    page.fill("#run-path", str(run))
    page.click("#run-form button")
    rows = page.locator("#facts tbody tr")
    rows.first.wait_for()
    assert rows.count() == 4
    page.fill("#fact-filter", "zh")
    assert page.locator("#facts tbody tr:not([hidden])").count() == 2
    page.fill("#fact-filter", "warsaw")
    assert page.locator("#facts tbody tr:not([hidden])").count() == 1
    page.locator("#facts tbody tr:not([hidden])").click()
    page.locator("#fact-detail button").click()                          # Table 1 effects, measured now
    page.locator("#effects table").wait_for()
    view = next(iter(x.runs.values()))
    facts = view.run.facts
    k = next(j for j, f in enumerate(facts) if f.id == "P36-013" and f.lang == "en")
    g = facts[unrelated_partner(facts)[0][k]]
    with x.models.use(CLM) as h:
        p = [answer_prob(h, *first_prompt(h, f)).prob for f in (facts[k], g)]
        e = edit_effect(h, facts[k], g, view.run.neurons[facts[k].key], *p)
    assert value(page, "#effects tr:nth-child(3) td:nth-child(2) .num") == e.p_suppress
    page.fill("#fact-filter", "")
    shot(page, "run", full=True)


def test_value_search(page, site):
    page.goto(site[0] + "/#/search")
    page.select_option("#model", CLM)
    page.fill("#search-token", "Ottawa")
    page.click("#search-form button")
    page.locator("#search-results a.neuron").first.wait_for(timeout=WAIT)
    with site[1].models.use(CLM) as h:
        l, i, _, _ = value_index(h).search(token_id(h, "Ottawa"))[0]
    assert page.locator("#search-results a.neuron").first.inner_text() == f"L{l}N{i}"
    shot(page, "search")


def test_bad_input_shows_a_message_then_the_page_goes_on(page, site, tmp_path):
    url = site[0]
    msg = page.locator("#message")

    def works_again():
        ask(page, CLM, PROMPT)
        page.wait_for_function("document.querySelector('#message').hidden && document.querySelectorAll('#top tr').length")

    def expect_message(text):
        msg.wait_for(state="visible")
        assert text in msg.inner_text()
        works_again()

    ask(page, CLM, "   ")
    expect_message("the prompt is empty")
    ask(page, CLM, PROMPT, "🦄")
    expect_message("cannot be encoded by this tokenizer")
    page.goto(url + "/#/neuron/neuron5")
    expect_message("unknown neuron 'neuron5'")
    page.goto(url + "/#/neuron/L99N0")
    expect_message("layer 99 is out of range")
    page.goto(url + "/#/run")
    page.fill("#run-path", str(tmp_path))
    page.click("#run-form button")
    expect_message("holds no run")
    ask(page, CLM, "")
    msg.wait_for(state="visible")
    shot(page, "error")


def test_edit_view_applies_shows_and_undoes(page, site):
    url, x, _ = site
    page.goto(url + "/#/edit")
    page.select_option("#model", CLM)
    page.locator("#edit-ids option[value='P36-008']").wait_for(state="attached")
    from kneuron.attribution.methods import METHODS as ATTRIBUTION
    from kneuron.editing import METHODS
    names = "s => [...s.options].map(o => o.value)"
    assert page.locator("#edit-method").evaluate(names) == list(METHODS)          # the lists: /api/meta's
    assert page.locator("#method").evaluate(names) == list(ATTRIBUTION)
    assert page.locator("#edit-method option[value=rome]").get_attribute("title").startswith(METHODS["rome"].help)
    page.select_option("#edit-method", "kn")
    page.fill("#edit-fact", "P36-008")
    page.fill("#edit-new", "Ottawa")                                     # bad input: the fact's own object
    page.click("#edit-form button[type=submit]")
    page.locator("#message").wait_for(state="visible")
    assert "is the fact's own object" in page.locator("#message").inner_text() and page.locator("#edited").is_hidden()
    page.fill("#edit-new", "Mexico City")
    page.click("#edit-form button[type=submit]")
    page.locator("#edit-table tbody tr").first.wait_for(timeout=WAIT)
    assert page.locator("#edit-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.what)") == [
        "rewrite", "paraphrase", "neighbour", "other language"]
    assert "edited: kn P36-008 (en): Ottawa → Mexico City" in page.locator("#edited").inner_text()
    report = x.edits[CLM]["report"]
    assert value(page, "#edit-table tbody tr:first-child .after-want .num") == report["lines"][0]["after"]["p_want"]
    shot(page, "edit", full=True)
    page.click("#edit-undo")
    page.locator("#edited").wait_for(state="hidden")
    assert CLM not in x.edits and page.locator("#edit-result").is_hidden()
