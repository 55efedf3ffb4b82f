"""A rich progress bar for the bench's stages (a no-op when disabled)."""
from __future__ import annotations

from typing import Callable


class Progress:
    """``with Progress(show, label, total) as step: ... step()`` (``step(k)``: k at once)."""

    def __init__(self, show: bool, label: str, total: int):
        self.show, self.label, self.total = show and total > 0, label, total

    def __enter__(self) -> Callable[..., None]:
        if not self.show:
            return lambda k=1: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn
        self.bar = Bar(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda k=1: self.bar.advance(task, k)

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
