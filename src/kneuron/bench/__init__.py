"""Benchmarks: speed beside the peer package, localization against a planted ground truth."""
