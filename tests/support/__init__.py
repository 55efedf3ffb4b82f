"""Test support: tiny random-weight models of every family (tiny.py), the slow reference IG the fast
engine is checked against (reference.py), fixtures for the explorer (explore_fixtures.py), the engine
tests' extra families and inputs (engine.py), the fact-check tests' inputs (factcheck.py), where things
are (paths.py)."""
