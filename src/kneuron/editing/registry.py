"""The editing methods by name, and the one entry point.

    METHODS["rome"]                                  -> the ROME class (capabilities: ROME.causal_only, ...)
    ALIASES["ft"]                                    -> "ft-m": an old name, still accepted (``lookup``)
    edit(h, fact, "Rome", method=ROME(layer=6))      -> Edit (not applied)
    edit(h, fact, "Rome", method="rome", layer=6)    the same: the name and its options
    coerce("rome", ["clamp_norm"], "8")              -> 8.0, the command line's typed ``--option``

A method's options are its dataclass fields (``options(cls)``: name, type, default); what one edit is
given besides (neurons, common neurons, the other language, ROME's statistics) is an ``EditContext``,
passed to ``edit`` by name. Errors are one line and name the method and its options.
"""
from __future__ import annotations

import json
import typing
import warnings
from dataclasses import MISSING, fields, is_dataclass

from kneuron.errors import ConfigError
from kneuron.facts.schema import Fact
from kneuron.models.load import ModelHandle

from .base import CONTEXT, Edit, EditContext, EditMethod, Rewrite
from .methods import KN, LIKN, MEMIT, ROME, AlphaEdit, FtL, FtM, KnEai, KnErase, KnOpt, LiknTransfer

METHODS: dict[str, type[EditMethod]] = {c.name: c for c in (KN, KnEai, KnErase, LIKN, LiknTransfer, KnOpt, ROME, FtM,
                                                            FtL, MEMIT, AlphaEdit)}
# old names still accepted (stored runs and scripts keep them): "ft" was FT-M before ft-l existed
ALIASES: dict[str, str] = {"ft": "ft-m"}


def lookup(name: str) -> type[EditMethod] | None:
    """The class registered under ``name``, or under the name an old one (``ALIASES``) now has; None."""
    cls = METHODS.get(name)
    return cls if cls is not None or name not in ALIASES else METHODS.get(ALIASES[name])


def method_class(method: str | EditMethod | type[EditMethod]) -> type[EditMethod]:
    """The class of ``method`` (a name, an old name, a class or an instance); ConfigError for an unknown
    name."""
    if isinstance(method, EditMethod):
        return type(method)
    if isinstance(method, type) and issubclass(method, EditMethod):
        return method
    cls = lookup(method) if isinstance(method, str) else None
    if cls is None:
        raise ConfigError(f"unknown editing method {method!r} (expected one of {', '.join(METHODS)})")
    return cls


def deprecation(name: str) -> str:
    """The one-line note for an old method name."""
    return f"editing method {name!r} is now {ALIASES[name]!r} (its old name still works)"


def option_names(method) -> list[str]:
    return [f.name for f in fields(method_class(method))]


def _takes(cls: type[EditMethod]) -> str:
    opts = f"{cls.name} takes {', '.join(option_names(cls)) or 'no options'}"
    return opts + (f"; per edit: {', '.join(cls.context)}" if cls.context else "")


def method_for(method: str | EditMethod | type[EditMethod] = "kn", **options) -> EditMethod:
    """A method object: ``method`` itself, or the method named ``method`` with ``options`` (its fields;
    a nested configuration such as ``localize`` may be a dict of its fields). ConfigError (one line) for
    an unknown method or option, or a bad value. An old name (``ALIASES``) gives a DeprecationWarning."""
    if isinstance(method, str) and method in ALIASES and method not in METHODS:
        warnings.warn(deprecation(method), DeprecationWarning, stacklevel=2)
    if isinstance(method, EditMethod):
        if options:
            raise ConfigError(f"options ({', '.join(options)}) go into the method object itself, "
                              f"e.g. ROME(layer=6)")
        return method
    cls = method_class(method)
    unknown = sorted(set(options) - set(option_names(cls)))
    if unknown:
        raise ConfigError(f"{cls.name}: unknown option(s) {', '.join(unknown)} ({_takes(cls)})")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{cls.name}: {str(e).splitlines()[0]}") from None


def edit(handle: ModelHandle, fact: Fact, new: str | None = None, *, method: str | EditMethod = "kn",
         **options) -> Edit:
    """Compute an edit of ``fact`` (object -> ``new``) by ``method`` against the model as it is now; the
    returned ``Edit`` is not applied yet (``with edit(...):`` or ``.apply()``). ``options``: the method's
    own (when ``method`` is a name) and the edit's context (``EditContext``: neurons, common, other,
    other_new, moment, execution, progress), each only for a method that reads it."""
    cls = method_class(method)
    ctx = {k: options.pop(k) for k in list(options) if k in CONTEXT}
    m = method_for(method, **options)
    extra = sorted(set(ctx) - set(cls.context))
    if extra:
        raise ConfigError(f"{cls.name}: unknown option(s) {', '.join(extra)} ({_takes(cls)})")
    rewrite = Rewrite(fact, new)
    m.check(handle, rewrite)
    return m.edit(handle, rewrite, EditContext(**ctx))


# ----------------------------------------------------------------------------- options as text

def option_types(cls) -> dict[str, object]:
    """Each field's type (resolved annotations) of a method or a nested configuration class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def type_name(hint) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def coerce(method: str, path: list[str], raw: str):
    """``raw`` (the text after ``=`` in ``--option METHOD.NAME=VALUE``; ``path``: NAME split at dots) as
    the value of that option, checked against its type: JSON where it parses, else the text itself.
    A nested configuration takes a JSON object of its fields, or one field (``kn.localize.steps=20``).
    ConfigError (one line) naming the option, the expected type and the bad value."""
    owner = method_class(method)
    where = owner.name
    for i, name in enumerate(path):
        fs = {f.name: f for f in fields(owner)}
        if name not in fs:
            raise ConfigError(f"--option {where}.{name}: {where} has no option {name!r} "
                              f"(it has: {', '.join(fs) or 'no options'})")
        where, default, last = f"{where}.{name}", _default(fs[name]), i == len(path) - 1
        if is_dataclass(default):                         # a nested configuration (kn's localize)
            if last:
                return _nested(where, raw, type(default))
            owner = type(default)
        elif not last:
            raise ConfigError(f"--option {where}: an option of type {type_name(option_types(owner)[name])} "
                              f"has no parts ({'.'.join(path[i + 1:])})")
    return _value(where, option_types(owner)[path[-1]], raw)


def _nested(where: str, raw: str, sub: type) -> dict:
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise ConfigError(f"--option {where}={raw}: expected a JSON object of {sub.__name__}'s fields "
                          f"({', '.join(f.name for f in fields(sub))}), or one of them: {where}.NAME=VALUE")
    types = option_types(sub)
    unknown = sorted(set(obj) - set(types))
    if unknown:
        raise ConfigError(f"--option {where}: {sub.__name__} has no option {', '.join(unknown)} "
                          f"(it has: {', '.join(types)})")
    return {k: _value(f"{where}.{k}", types[k], json.dumps(v)) for k, v in obj.items()}


def _value(where: str, hint, raw: str):
    from pydantic import TypeAdapter, ValidationError
    ta = TypeAdapter(hint)
    try:
        value = ta.validate_json(raw)
    except ValidationError:
        try:
            value = ta.validate_python(raw)
        except ValidationError:
            raise ConfigError(f"--option {where}: expected {type_name(hint)}, got {raw!r}") from None
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------------- what the page and the CLI show

def options(method) -> list[dict]:
    """The method's options: name, type and default (JSON values; nested configurations as dicts)."""
    cls = method_class(method)
    types = option_types(cls)
    return [{"name": f.name, "type": type_name(types[f.name]), "default": _jsonable(_default(f))}
            for f in fields(cls)]


def describe() -> list[dict]:
    """Every method: name, one-line help, capabilities, context names and options (``/api/meta``)."""
    return [{"name": c.name, "help": c.help, **c.capabilities(), "context": list(c.context), "options": options(c)}
            for c in METHODS.values()]


def _jsonable(x):
    if is_dataclass(x):
        return {f.name: _jsonable(getattr(x, f.name)) for f in fields(x)}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)


__all__ = ["ALIASES", "METHODS", "coerce", "deprecation", "describe", "edit", "lookup", "method_class", "method_for",
           "option_names", "option_types", "options"]
