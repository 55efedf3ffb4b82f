"""Crash and damage tests: kill -9 mid-run, truncated / torn / wrong files, against store/."""
