"""The one progress display for long loops (locate, Table 1, DKN, Table 3, the editing bench):

    with progress("locating", total=len(facts), completed=done, show=show) as advance:
        for f in todo:
            ...
            advance()          # advance(k): k at once

    for f in track(facts, "evaluating", show=show): ...

A rich bar (label, bar, done/total, time left) on the default console; a no-op when ``show`` is false
or there is nothing to do. How it is drawn is decided in `_display` alone, so that one place can later
choose, say, a single summary line when the output is not a terminal.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def _nothing(k: int = 1) -> None:
    return None


@contextmanager
def progress(label: str, total: int, *, completed: int = 0, show: bool = True,
             console=None) -> Iterator[Callable[..., None]]:
    """A progress display over ``total`` steps, ``completed`` of them done already; yields
    ``advance(k=1)``. Stopped (its last state left on screen) when the block ends, even on an error."""
    if not show or total <= 0:
        yield _nothing
        return
    bar = _display(label, console)
    with bar:
        task = bar.add_task(label, total=total, completed=completed)
        yield lambda k=1: bar.advance(task, k)


def track(items: Iterable[T], label: str, *, show: bool = True, total: int | None = None) -> Iterator[T]:
    """``items`` one by one under a `progress` display (``total``: len(items) unless given)."""
    items = items if total is not None else list(items)
    with progress(label, len(items) if total is None else total, show=show) as advance:
        for x in items:
            yield x
            advance()


def _display(label: str, console=None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console)


__all__ = ["progress", "track"]
