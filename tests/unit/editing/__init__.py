"""kneuron.editing: one file per module."""
