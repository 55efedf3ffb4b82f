"""report.progress: one progress display on stderr, a rich bar on a terminal, one summary line elsewhere;
a no-op when off or empty."""
import pytest
from rich.console import Console

from kneuron.report import progress as P


def recorded(monkeypatch, terminal: bool = True) -> Console:
    console = Console(record=True, width=100, force_terminal=terminal, color_system=None)
    real = P._display
    monkeypatch.setattr(P, "_display", lambda label, c=None: real(label, console))
    return console


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_counts_from_what_is_done(monkeypatch, terminal):
    console = recorded(monkeypatch, terminal)
    with P.progress("locating", total=5, completed=2) as advance:
        advance()
        advance(2)
    text = console.export_text()
    assert "locating" in text and "5/5" in text


def test_off_or_empty_shows_nothing(monkeypatch):
    console = recorded(monkeypatch)
    with P.progress("x", total=3, show=False) as advance:
        advance()
    with P.progress("y", total=0) as advance:
        advance()
    assert console.export_text() == ""
    assert list(P.track([1, 2], "z", show=False)) == [1, 2]


def test_track_yields_every_item_and_the_display_stops_on_an_error(monkeypatch):
    console = recorded(monkeypatch)
    assert list(P.track(iter("abc"), "letters")) == ["a", "b", "c"]
    text = console.export_text()                 # export_text empties the record
    assert "letters" in text and "3/3" in text
    shown = []
    real = P._display
    monkeypatch.setattr(P, "_display", lambda label, c=None: shown.append(real(label, console)) or shown[-1])
    with pytest.raises(RuntimeError):
        with P.progress("failing", total=2) as advance:
            advance()
            raise RuntimeError("boom")
    assert not shown[0].live.is_started


def test_not_a_terminal_is_one_summary_line_on_stderr(capfd):
    """Under capfd stderr is a pipe: no bar frames (no carriage return), one line per display, at its end,
    saying how far it got; stdout (a command's output) untouched."""
    with P.progress("locating", total=40) as advance:
        for _ in range(40):
            advance()
    with pytest.raises(RuntimeError):
        with P.progress("failing", total=3) as advance:
            advance()
            raise RuntimeError("boom")
    out, err = capfd.readouterr()
    assert out == "" and "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("locating: 40/40 in ") and lines[0].endswith(" s")
    assert lines[1].startswith("failing: 1/3 in ") and lines[1].endswith("(stopped)")
