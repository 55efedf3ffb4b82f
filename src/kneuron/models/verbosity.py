"""How much of the dependencies' own output reaches the console: transformers' and huggingface_hub's log
lines (the hub client's retries among them) and their progress bars, and tqdm bars drawn inside them.

None by default: kneuron reports progress itself (``report.progress``, one summary line in a log file) and
errors as one line. ``kneuron --verbose`` (or KNEURON_VERBOSE=1, which also reaches worker processes) leaves
them at the dependencies' own defaults, for debugging. The dependencies are imported only when quieted.
"""
from __future__ import annotations

import os

ENV = "KNEURON_VERBOSE"
_TRUE = {"1", "on", "yes", "true"}


def verbose() -> bool:
    """Whether the dependencies' logs and bars are shown (KNEURON_VERBOSE=1, set by ``kneuron --verbose``)."""
    return os.environ.get(ENV, "").strip().lower() in _TRUE


def set_verbose(on: bool) -> None:
    """Show (True) or hide the dependencies' output from now on, here and in processes started later."""
    os.environ[ENV] = "1" if on else "0"
    quiet_dependencies()


def quiet_dependencies() -> None:
    """transformers' and huggingface_hub's loggers at errors only and their progress bars off (transformers'
    switch turns the hub's bars too); unless verbose, where both are put back to their defaults (warnings,
    bars on)."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging
    if verbose():
        hub_logging.set_verbosity_warning()
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
    else:
        hub_logging.set_verbosity_error()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


__all__ = ["ENV", "quiet_dependencies", "set_verbose", "verbose"]
