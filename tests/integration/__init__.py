"""End-to-end tests across layers: the CLI, reproduce, the editing bench, the explorer."""
