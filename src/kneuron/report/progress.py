"""The one progress display for long loops (locate, Table 1, DKN, Table 3, the editing bench):

    with progress("locating", total=len(facts), completed=done, show=show) as advance:
        for f in todo:
            ...
            advance()          # advance(k): k at once

    for f in track(facts, "evaluating", show=show): ...

On stderr (stdout stays the command's output): a rich bar (label, bar, done/total, time left) where stderr
is a terminal; elsewhere (a log file, a pipe, CI) nothing while it runs and one summary line when it stops
("locating: 5/5 in 3.2 s"), so that a log holds no carriage-return frames. A no-op when ``show`` is false
or there is nothing to do. How it is drawn is decided in `_display` alone.
"""
from __future__ import annotations

import time
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
    """The rich bar where ``console`` (default: stderr) is a terminal or a notebook, else a `_Summary`."""
    from rich.console import Console
    console = console or Console(stderr=True)
    if not (console.is_interactive or console.is_jupyter):
        return _Summary(label, console)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console)


class _Summary:
    """The display where no bar can be redrawn in place: silent while it runs, one line when it stops
    (``label: done/total in s``, "stopped" when it ends before the total). rich's Progress interface, the
    part `progress` uses."""

    def __init__(self, label: str, console):
        self.label, self.console = label, console
        self.done, self.total, self.started = 0, 0, time.perf_counter()

    def __enter__(self) -> "_Summary":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        took = time.perf_counter() - self.started
        stopped = "" if self.done >= self.total else " (stopped)"
        self.console.print(f"{self.label}: {self.done}/{self.total} in {took:.1f} s{stopped}", markup=False,
                           highlight=False, soft_wrap=True)

    def add_task(self, label: str, total: int, completed: int = 0) -> int:
        self.total, self.done = total, completed
        return 0

    def advance(self, task: int, k: int = 1) -> None:
        self.done += k


__all__ = ["progress", "track"]
