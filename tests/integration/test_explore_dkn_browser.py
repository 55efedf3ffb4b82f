"""The run view's DKN groups in a real headless Chromium (Debian's `chromium`, driven by Playwright), on
runs made without a model: a run with both rules' files badges each neuron with the rules whose groups hold
it and lists each rule's groups; a run with dkn.jsonl alone shows the one line it showed before."""
import pytest

from kneuron.explore import Explorer, Models
from support.dkn_run import make_dkn_run
from support.explore_fixtures import chromium, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if chromium() is None:
        pytest.skip("no chromium: apt-get install chromium (make setup does)")
    d = tmp_path_factory.mktemp("runs")
    x = Explorer(Models([]), [str(make_dkn_run(d / "both")), str(make_dkn_run(d / "pairs", rules=("pairs",)))])
    ids = {r.path.name: r.id for r in x.runs.values()}
    from playwright.sync_api import sync_playwright
    with serving(x) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.set_default_timeout(60_000)
        yield url, ids, page
        browser.close()


def badges(page) -> dict[str, list[str]]:
    """The fact's neuron table: each neuron's DKN badges."""
    return {r.locator("a.neuron").inner_text(): r.locator(".badge").all_inner_texts()
            for r in page.locator("#fact-detail table tr").all()[1:]}


def test_both_rules_are_badged_and_listed(site):
    url, ids, page = site
    page.goto(f"{url}/#/run/{ids['both']}/0")
    page.locator("#fact-detail h3", has_text="P1 (en)").wait_for()
    assert page.locator("#fact-detail th", has_text="DKN").count() == 1
    assert badges(page) == {"L0N1": ["pairs", "clusters"], "L1N2": ["pairs"], "L2N3": ["clusters"],
                            "L1N5": ["clusters"], "L2N7": []}
    lines = page.locator("#fact-detail p.dkn-groups")
    assert [lines.nth(i).get_attribute("data-rule") for i in range(lines.count())] == ["pairs", "clusters"]
    assert lines.nth(0).inner_text() == "degenerate groups (DKN, pairs rule): {L0N1, L1N2}"
    assert lines.nth(1).inner_text() == "degenerate groups (DKN, clusters rule): {L0N1, L1N5, L2N3}"
    names = page.evaluate("Array.from(document.querySelector('#hist').data, (t) => t.name)")
    assert names == ["knowledge neurons", "language-independent", "in DKN groups (pairs)",
                     "in DKN groups (clusters)"]
    page.goto(f"{url}/#/run/{ids['both']}/1")                 # P1 (zh): no group of either rule
    page.locator("#fact-detail h3", has_text="P1 (zh)").wait_for()
    assert [lines.nth(i).inner_text() for i in range(lines.count())] == [
        "degenerate groups (DKN, pairs rule): none", "degenerate groups (DKN, clusters rule): none"]


def test_a_run_with_dkn_jsonl_alone_looks_as_before(site):
    url, ids, page = site
    page.goto(f"{url}/#/run/{ids['pairs']}/0")
    page.locator("#fact-detail h3", has_text="P1 (en)").wait_for()
    assert page.locator("#fact-detail .badge").count() == 0
    assert page.locator("#fact-detail th").all_inner_texts() == ["neuron", "score"]
    assert page.locator("#fact-detail p", has_text="degenerate groups").all_inner_texts() == [
        "degenerate groups (DKN): {L0N1, L1N2}"]
    names = page.evaluate("Array.from(document.querySelector('#hist').data, (t) => t.name)")
    assert names == ["knowledge neurons", "language-independent", "in DKN groups"]
