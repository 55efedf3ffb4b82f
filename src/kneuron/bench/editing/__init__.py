"""The editing benchmark: every method on the same CounterFact-style records, in every language, resumable.

    run_editing_bench(handle, facts, n=100, methods=("kn", "rome"), out="runs/edit", mode="single")

Single mode: for each method, case and edit language, compute the edit, apply it, measure the case in every
language, undo it. Sequential mode: per method and edit language, the edits are kept one after another;
after each the case is measured, and after 1, 10, 50, 100 kept edits every record edited so far is measured
again (S after k edits). Batch mode (the value-vector methods, ``kneuron.editing.batch``): per method and
edit language, every case's edit is computed on the unedited model, all are applied at once, and each case
is measured under the whole batch. Measurements and metrics: ``kneuron.editing.metrics``; records:
``kneuron.editing.records``. Every edit row carries the edit's health (``kneuron.editing.health``), and
sequential mode's guard (``on_collapse``) undoes a disabling edit (or stops the chain there).

    config.py    EditingConfig, what each method is to the bench, run.json and the resume check
    rows.py      the typed rows (EditRow, Measurement, ...) and the JSON each is kept as
    disk.py      the run directory (file by file: see there); an interrupted run loses at most the edit
                 under way, and ``resume=True`` skips what is there and redoes a file that does not read back
    context.py   BenchContext: what every mode edits with, built once; one edit and its measurement
    prepare.py   the stages that build it: unedited measurements, localization, ROME's layer sweep
    modes.py     Single, Sequential, Batched
    bench.py     the run: open, build the context, each method in its mode, results.json and the report
"""
from .bench import EditingBench, run_editing_bench, summary
from .config import CHECKPOINTS, DEFAULT_METHODS, MODES, EditingConfig, kn_methods
from .context import BenchContext
from .modes import Batched, Sequential, Single
from .rows import EditRow, Measurement

__all__ = ["CHECKPOINTS", "DEFAULT_METHODS", "BenchContext", "Batched", "EditRow", "EditingBench", "EditingConfig",
           "MODES", "Measurement", "Sequential", "Single", "kn_methods", "run_editing_bench", "summary"]
