"""kneuron.cli: one file per module."""
