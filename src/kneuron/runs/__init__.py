"""Runs: locate many facts into a resumable run directory (local or Ray executors), re-open a run."""
