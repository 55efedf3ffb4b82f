"""kneuron.bench.crosslingual (with editing_report.results): the 2 x 2 matrix has a 95 % interval for every
cell, the gain over the unedited model is paired record by record, likn's cells are labelled one edit of both
languages and the transfer methods' cells transfer, and the report sets ours beside the published Bi-ZsRE
points with their caveats."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import kneuron.bench.editing_report as er
from kneuron.bench import crosslingual as xl
from kneuron.bench.editing.rows import EditRow, Measurement
from kneuron.report import render

LANGS = ("en", "zh")
N = 8
META = {"model": "tiny-model", "n": N, "kind": "causal", "n_layers": 2, "n_neurons": 8, "mode": "single",
        "facts": "en-zh", "method_options": {}}


def rec(es, ps, ns, gen):
    return {"ES": es, "PS": ps, "NS": ns, "generalization": gen, "reliability": es}


# the unedited model: ES 0 everywhere, PS 0 / 1 alternating; NS 1
BEFORE = {i: {lang: rec(0.0, float(i % 2), 1.0, 0.0) for lang in LANGS} for i in range(N)}


def after(method: str, edit: str, measured: str, i: int) -> dict:
    """rome reaches the other language on half of the records; likn on all; kn on none (unedited scores)."""
    if measured == edit:
        return rec(1.0, 1.0, 0.5 + 0.5 * (i % 2), 1.0)
    if method == "rome":
        return rec(float(i < N // 2), float(i % 2), 1.0, 0.25)
    if method == "likn":
        return rec(1.0, 1.0, 1.0, 1.0)
    return dict(BEFORE[i][measured])


@pytest.fixture
def res(monkeypatch):
    monkeypatch.setattr(er, "record_scores", lambda a, b=None: a)   # BEFORE holds the unedited scores already
    cases = [SimpleNamespace(case_id=i, langs=list(LANGS)) for i in range(N)]
    rows = {m: {(i, e): EditRow(m, i, f"P36-{i:03d}", e, "new", 0.5, 0.25, 10, {},
                                {g: Measurement(None, after(m, e, g, i)) for g in LANGS})
                for i in range(N) for e in LANGS}
            for m in ("rome", "likn", "likn-transfer", "kn")}
    return er.results(META, cases, BEFORE, rows, {}, None, None, {})


def test_every_cell_has_its_interval(res):
    for m in res["methods"]:
        for a in LANGS:
            for b in LANGS:
                pair = f"{a}->{b}"
                cell, iv = res["matrix"][m][pair], res["intervals"]["matrix"][m][pair]
                assert set(xl.KEYS) <= set(cell)
                for k in ("S", "ES", "PS", "NS", "generalization"):
                    lo, hi = iv[k]
                    assert lo <= cell[k] <= hi, (m, pair, k)
            # the diagonal cell's intervals are the method's own table's
            assert res["intervals"]["matrix"][m][f"{a}->{a}"] == res["intervals"]["methods"][m][a]
    rome = res["intervals"]["matrix"]["rome"]["en->zh"]["ES"]
    assert rome[0] < 50 < rome[1] and rome[1] - rome[0] > 10          # 4 of 8 records: a wide interval


def test_the_gain_over_the_unedited_model_is_paired(res):
    lift = res["crosslingual"]["lift"]
    # rome en->zh: ES 0 -> 1 on half the records: +50, interval inside (0, 100]
    es = lift["rome"]["en->zh"]["ES"]
    assert es[0] == 50.0 and 0 < es[1] <= es[0] <= es[2] <= 100
    # its PS equals the unedited PS record by record (0 / 1 alternating): gain 0 with a zero-width interval,
    # which an unpaired comparison of the two means would not give
    assert lift["rome"]["en->zh"]["PS"] == [0.0, 0.0, 0.0]
    assert lift["kn"]["zh->en"]["ES"] == [0.0, 0.0, 0.0]
    assert xl.reaches(lift["rome"]["en->zh"]) == ["ES"] and xl.reaches(lift["kn"]["en->zh"]) == []
    assert "en->en" not in lift["rome"]                                 # the diagonal is no gain of transfer
    assert xl.lift([{"ES": None}], [{"ES": 1.0}], "ES") is None


def test_cells_are_labelled_for_what_they_are(res):
    assert res["crosslingual"]["cells"] == {"rome": "transfer", "likn": "both", "likn-transfer": "transfer",
                                            "kn": "transfer"}
    assert xl.cell_kind("ft") == xl.cell_kind("ft-l") == xl.cell_kind("kn-opt") == "transfer" and xl.cell_kind("no-such") is None
    md = render.markdown(er.document(res, None))
    assert "#### likn (one edit of both languages at once: not transfer)" in md
    assert "#### likn-transfer (off-diagonal cells: transfer)" in md
    assert "#### rome (off-diagonal cells: transfer)" in md
    lines = [ln for ln in md.splitlines() if ln.startswith(("| likn | en → zh", "| likn | zh → en"))]
    assert len(lines) == 2 and all("not transfer: one edit of both languages" in ln and "n/a (its own edit)" in ln
                                   for ln in lines)
    rome = next(ln for ln in md.splitlines() if ln.startswith("| rome | en → zh"))
    assert "| transfer |" in rome and rome.rstrip(" |").endswith("ES")
    kn = next(ln for ln in md.splitlines() if ln.startswith("| kn | en → zh"))
    assert kn.rstrip(" |").endswith("neither")
    # every matrix cell is written with its interval: S, ES, PS, NS each followed by [low, high]
    cell = next(ln for ln in md.splitlines() if ln.startswith("| edit en |"))
    assert cell.count("[") == 2 * 4


def test_the_published_points_stand_beside_ours_with_caveats(res):
    assert {(p.method, p.edit_lang, p.measure_lang): p.value for p in xl.BI_ZSRE.points} == {
        ("ROME", "en", "en"): 95.0, ("MEMIT", "en", "en"): 95.0, ("ROME", "en", "zh"): 26.65,
        ("MEMIT", "en", "zh"): 28.26, ("KN", "en", "zh"): 6.66}
    assert xl.BI_ZSRE.model == "Chinese-LLaMA-7B" and "2309.08952" in xl.BI_ZSRE.source
    md = render.markdown(er.document(res, None))
    assert "ROME edit in en, measured in en: ~95" in md and "KN edit in en, measured in zh: 6.66" in md
    assert "Not comparable as numbers" in md and "against tiny-model here" in md and "token F1" in md
    pub = next(ln for ln in md.splitlines() if ln.startswith("| ROME (published) | en → zh"))
    assert "| 26.65 | n/a | 0.28 |" in pub                                # 26.65 / 95 of the English score left
    ours = next(ln for ln in md.splitlines() if ln.startswith("| rome | en → zh | Gen"))
    assert "| 25.00 | 0.00 | 0.25 |" in ours                              # Gen 25 of 100 left in zh; unedited 0
    ps = next(ln for ln in md.splitlines() if ln.startswith("| rome | en → zh | PS"))
    assert "| 50.00 | 50.00 | 0.50 |" in ps                               # the unedited PS beside it
    assert not any(ln.startswith("| likn | en → zh | Gen") for ln in md.splitlines())   # not transfer: not set beside
