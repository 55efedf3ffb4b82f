"""The Prompt view's languages side by side in a real headless Chromium (Debian's `chromium`, driven by
Playwright), on the miniature bilingual organism: both languages' prompts and heatmaps are drawn, the
LIKN overlap is counted, listed and marked on both heatmaps as the intersection of the languages'
``localize`` neurons, a language the fact lacks is a note, the fact list carries the known marks,
and the single prompt still works beside it. Takes docs/explore/bilingual.png (see test_explore_browser)."""
import pytest

from support.explore_fixtures import bilingual_site, chromium, shot
from support.tiny import bilingual_facts
from kneuron.neurons import LocateConfig, localize
from kneuron.organisms.known import known_facts
from kneuron.probe import predict

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
MINI, STEPS, FACT = "mini-clm", 3, "c2"          # Spain: the organism's en and zh neurons overlap


@pytest.fixture(scope="module")
def site(mini_organism, tmp_path_factory):
    """(url, handle, fact file, fact file lacking c2 in Chinese)."""
    if chromium() is None:
        pytest.skip("no chromium: apt-get install chromium (make setup does)")
    with bilingual_site(mini_organism, tmp_path_factory, MINI, lacking=FACT) as s:
        yield s


@pytest.fixture(scope="module")
def page(site):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        pg.set_default_timeout(60_000)
        pg.goto(site[0] + "/#/prompt")
        pg.locator(f"#model option[value='{MINI}']").wait_for(state="attached")
        yield pg
        browser.close()


def compare(page, facts: str) -> None:
    page.evaluate("document.querySelector('#bi-sides').replaceChildren()")
    page.fill("#bi-facts", facts)
    page.fill("#bi-fact", FACT)
    page.fill("#steps", str(STEPS))
    page.click("#bi-form button[type=submit]")


def test_side_by_side_shows_both_prompts_and_marks_the_overlap(page, site):
    url, h, path, _ = site
    compare(page, path)
    for lang in ("en", "zh"):
        page.locator(f".bi-side[data-lang={lang}] .bi-heatmap[data-drawn-ms]").wait_for()
    facts = [f for f in bilingual_facts() if f.id == FACT]
    sets = {f.lang: set(localize(h, f, LocateConfig(steps=STEPS)).neurons) for f in facts}
    shared = sets["en"] & sets["zh"]
    assert shared
    assert page.locator(".bi-side .bi-prompt").all_inner_texts() == [f.first_query("causal").prompt for f in facts]
    assert int(page.locator("#bi-likn-count").get_attribute("data-value")) == len(shared)
    assert set(page.locator("#bi-likn-list a.neuron").all_inner_texts()) == {f"L{l}N{i}" for l, i in shared}
    for f in facts:                                  # both heatmaps: the scores, the side's neurons, the overlap
        traces = page.locator(f".bi-side[data-lang={f.lang}] .bi-heatmap").evaluate(
            "d => d.data.map(t => [t.type, t.name || null, (t.x || []).map((x, k) => [t.y[k], x])])")
        assert [t[0] for t in traces] == ["heatmap", "scatter", "scatter"]
        assert {tuple(n) for n in traces[1][2]} == sets[f.lang]
        assert {tuple(n) for n in traces[2][2]} == shared
        top = page.locator(f".bi-side[data-lang={f.lang}] .bi-top tr:first-child code.token").get_attribute("data-token")
        assert top == predict(h, f.first_query("causal").prompt, 1)[0][0]
    shot(page, "bilingual", part="#bilingual")
    page.locator(".bi-side[data-lang=zh] .bi-use").click()      # its prompt into the single-prompt view
    page.locator("#top tr").first.wait_for()
    assert page.locator("#prompt").input_value() == facts[1].first_query("causal").prompt


def test_a_fact_missing_in_one_language_is_a_note(page, site):
    compare(page, site[3])
    page.locator(".bi-side[data-lang=en] .bi-heatmap[data-drawn-ms]").wait_for()
    assert "no zh version" in page.locator(".bi-side[data-lang=zh] .note").inner_text()
    assert "every language" in page.locator("#bi-likn .note").inner_text()
    assert page.locator("#bi-likn-count").count() == 0


def test_the_fact_list_has_the_known_marks(page, site):
    url, h, path, _ = site
    page.fill("#bi-facts", path)
    page.dispatch_event("#bi-facts", "change")
    page.wait_for_function("document.querySelector('#bi-list-status').textContent.includes('knows')")
    facts = bilingual_facts()
    known = {f.key for f in known_facts(h, facts)}
    options = page.locator("#bi-ids option").evaluate_all("os => os.map(o => [o.value, o.dataset.known])")
    assert options == [[i, ",".join("true" if (i, lang) in known else "false" for lang in ("en", "zh"))]
                       for i in dict.fromkeys(f.id for f in facts)]


def test_the_single_prompt_still_works(page, site):
    url, h, _, _ = site
    page.fill("#prompt", "the capital of italy is")
    page.fill("#answer", "")
    page.click("#predict")
    page.wait_for_function("document.querySelector('#top code.token')?.dataset.token === %r"
                           % predict(h, "the capital of italy is", 1)[0][0])
