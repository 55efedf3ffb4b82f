"""The base of every expected error (bad input, a run that cannot be used as asked, a model that cannot
be loaded). Its message is one line that says what is wrong and where; the command line prints it and
exits non-zero. Anything else is a bug and keeps its traceback. It lives in the lowest layer so that
every layer can raise one."""
from __future__ import annotations


class KneuronError(Exception):
    """An expected error; str(e) is one line."""


class ConfigError(KneuronError, ValueError):
    """A bad option or setting (a method, a step count, a threshold ...), found before any work."""


class MissingDependencyError(KneuronError, ImportError):
    """An optional dependency is not installed; the message says what to install."""
