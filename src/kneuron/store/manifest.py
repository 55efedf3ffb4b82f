"""The manifest of a resumable directory (a run's run.json, reproduce.json): the settings it was made
with, provenance and versions, old option names upgraded on reading, and THE resume check.

    m = Manifest.open(out, meta, resume=resume, keys=RESUME_KEYS)   # new: written; resumed: checked
    m.meta["skipped"] = [...]; m.save()                               # atomically
    m.timings.add("Module 3", seconds)                                # timings.json, summed over sessions
    rec = open_records(m.dir / "edits", codec="json", root=m.dir)    # keyed records beside it (store.records)

A resumed directory must have been made with the same settings: ``check_resume`` compares the stored
settings with the new ones once written as JSON (tuples and lists alike) and names every key that
differs in one line.
"""
from __future__ import annotations

import json
import logging
import platform
from importlib import metadata
from pathlib import Path

from kneuron.errors import ConfigError
from kneuron.store.atomic import Warn, move_aside, one_line, parse_json, write_json

MANIFEST = "run.json"
TIMINGS = "timings.json"       # each stage's wall time, summed over the sessions of a run
RENAMED_OPTIONS = {"prefactor_kind": "prefactor"}    # method option: old name in run.json -> current name
log = logging.getLogger("kneuron.store")


def upgrade(meta: dict) -> dict:
    """A manifest as written by an older kneuron, in today's names (in memory; the file is left as it
    is): AMIG's ``prefactor_kind`` is ``prefactor`` now."""
    opts = meta.get("method_options")
    if isinstance(opts, dict) and any(k in opts for k in RENAMED_OPTIONS):
        meta = {**meta, "method_options": {RENAMED_OPTIONS.get(k, k): v for k, v in opts.items()}}
    return meta


def jsonable(v):
    """``v`` as it reads back once written as JSON (tuples as lists, unknown objects as their str)."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def differing(stored: dict, now: dict, keys=None, defaults: dict | None = None) -> list[str]:
    """The keys whose values differ once written as JSON: of ``keys`` those present on both sides, or
    (``keys`` None) every key of either side (one missing on a side differs). ``defaults``: a key missing
    on a side has this value there (a setting that older manifests, or a default config, leave out)."""
    if defaults:
        stored, now = {**defaults, **stored}, {**defaults, **now}
    if keys is None:
        names = list(stored) + [k for k in now if k not in stored]
        return [k for k in names if k not in stored or k not in now or jsonable(stored[k]) != jsonable(now[k])]
    return [k for k in keys if k in stored and k in now and jsonable(stored[k]) != jsonable(now[k])]


def check_resume(where, stored: dict, now: dict, keys=None, *, error: type[Exception] = ConfigError,
                 hint: str = "", defaults: dict | None = None) -> None:
    """Refuse to resume ``where`` with other settings: one line naming every differing key (see
    ``differing``, with its ``defaults``) with both values, then ``hint``. Raises ``error`` (a
    ConfigError by default)."""
    diff = differing(stored, now, keys, defaults)
    if not diff:
        return
    stored, now = {**(defaults or {}), **stored}, {**(defaults or {}), **now}
    show = lambda d, k: repr(d[k]) if k in d else "nothing"  # noqa: E731
    said = ", ".join(f"{k} differs (run has {show(stored, k)}, now {show(now, k)})" for k in diff)
    raise error(f"cannot resume {where}: {said}" + (f"; {hint}" if hint else ""))


def check_out(path, resume: bool = False, readonly: bool = False, *, name: str = MANIFEST,
              error: type[Exception] = ConfigError) -> None:
    """Whether ``path`` can take a run as asked, before any work (one line): a new run needs a missing
    or empty directory, a resumed (or read) one a directory with its manifest ``name``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{path}: " + ("a file, not a run directory" if readonly
                                   else "--out names a file, not a run directory"))
    if resume and not (path / name).is_file():
        raise error(f"{path} holds no run (no {name})")
    if not resume and path.exists() and any(path.iterdir()):
        raise error(f"{path} already holds a run; pass --resume to continue it or choose another --out")


def versions(*packages: str) -> dict:
    """kneuron's, Python's and each installed package's version (read from its metadata: nothing is
    imported), for a manifest's provenance."""
    from kneuron._version import __version__
    out = {"kneuron": __version__}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    out["python"] = platform.python_version()
    return out


class Manifest:
    """A directory's manifest file (a JSON object) and what lies beside it."""

    def __init__(self, directory, meta: dict | None = None, *, name: str = MANIFEST, warn: Warn | None = None):
        self.dir, self.name = Path(directory), name
        self.meta: dict = dict(meta or {})
        self.warn = warn

    @property
    def path(self) -> Path:
        return self.dir / self.name

    @classmethod
    def read(cls, directory, *, name: str = MANIFEST, error: type[Exception] = ConfigError,
             warn: Warn | None = None) -> "Manifest":
        """The manifest of an existing directory, upgraded (``upgrade``); a missing or damaged one is
        refused in one line (it is the run's identity: never moved aside)."""
        path = Path(directory) / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise error(f"{path}: cannot be read ({one_line(e)})") from None
        meta, why = parse_json(data, dict)
        if why is not None:
            raise error(f"{path}: damaged ({why})")
        return cls(directory, upgrade(meta), name=name, warn=warn)

    @classmethod
    def open(cls, directory, meta: dict | None = None, *, resume: bool = False, readonly: bool = False,
             keys=None, name: str = MANIFEST, error: type[Exception] = ConfigError, hint: str = "",
             warn: Warn | None = None, defaults: dict | None = None) -> "Manifest":
        """A new directory (``meta`` written as its manifest) or, ``resume``/``readonly``, an existing
        one whose stored settings must agree with ``meta`` (``check_resume`` over ``keys``, a key missing
        on a side taken from ``defaults``)."""
        check_out(directory, resume=resume or readonly, readonly=readonly, name=name, error=error)
        if resume or readonly:
            m = cls.read(directory, name=name, error=error, warn=warn)
            if meta is not None:
                check_resume(m.dir, m.meta, meta, keys, error=error, hint=hint, defaults=defaults)
            return m
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise error(f"{directory}: cannot make the run directory ({one_line(e)})") from None
        m = cls(directory, meta, name=name, warn=warn)
        m.save()
        return m

    def save(self) -> None:
        """Write the manifest atomically (sorted keys, two-space indent, UTF-8 kept, final newline)."""
        write_json(self.path, self.meta, indent=2, sort_keys=True, ensure_ascii=False, default=str, newline=True)

    @property
    def timings(self) -> "Timings":
        return Timings(self.dir, warn=self.warn)


class Timings:
    """timings.json: each stage's wall time in seconds, summed over the sessions of a run, so a
    resumed session adds only what it did."""

    def __init__(self, directory, *, name: str = TIMINGS, warn: Warn | None = None):
        self.path, self.warn = Path(directory) / name, warn

    def read(self) -> dict:
        """The times so far ({} when none); a file that is not a JSON object is moved to damaged/
        (one warning line) and the times start again."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        times, why = parse_json(data, dict)
        if why is not None:
            move_aside(self.path, why, root=self.path.parent, then="the stage times start again",
                       warn=self.warn or log.warning)
            return {}
        return times

    def add(self, stage: str, seconds: float) -> dict:
        """Add ``seconds`` to ``stage`` (rounded to 10 ms) and return all the times."""
        times = self.read()
        times[stage] = round(times.get(stage, 0.0) + seconds, 2)
        write_json(self.path, times, indent=2)
        return times


def add_time(run_dir, stage: str, seconds: float, warn: Warn | None = None) -> dict:
    """``Timings(run_dir, warn=warn).add(stage, seconds)``: the one timings mechanism."""
    return Timings(run_dir, warn=warn).add(stage, seconds)
