"""kneuron.editing.registry: every method's capabilities, name <-> class, options, typed coercion of
``--option`` text, and one-line errors."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch

from kneuron.editing import (FT, KN, LIKN, MEMIT, METHODS, ROME, AlphaEdit, EditMethod, FtL, FtM, KnEai, KnErase,
                             KnOpt, LiknTransfer, edit)
from kneuron.editing.localize import LOCALIZE
from kneuron.editing.registry import (ALIASES, coerce, describe, lookup, method_class, method_for, option_names,
                                      options)
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.neurons import LocateConfig
from support.tiny import tiny_handle

FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y]", "[X] capital city is [Y]"))

# name: (class, causal_only, batch_rule, uses_neurons, common_filter, languages, shared_neurons, needs_new)
CAPABILITIES = {
    "kn":            (KN, False, "add", True, True, 1, False, True),
    "kn-eai":        (KnEai, False, "add", True, True, 1, False, True),
    "kn-erase":      (KnErase, False, "set", True, True, 1, False, False),
    "likn":          (LIKN, False, "add", True, False, 2, True, True),
    "likn-transfer": (LiknTransfer, False, "add", True, False, 1, True, True),
    "kn-opt":        (KnOpt, False, "add", True, True, 1, False, True),
    "rome":          (ROME, True, None, False, False, 1, False, True),
    "ft-m":          (FtM, False, None, False, False, 1, False, True),
    "ft-l":          (FtL, True, None, False, False, 1, False, True),
    "memit":         (MEMIT, True, "joint", False, False, 1, False, True),
    "alphaedit":     (AlphaEdit, True, "joint", False, False, 1, False, True),
}


def one_line(err) -> bool:
    return bool(str(err.value)) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", list(CAPABILITIES))
def test_every_method_says_what_it_can_do(name):
    cls, causal, rule, neurons, common, langs, shared, needs_new = CAPABILITIES[name]
    assert METHODS[name] is cls and cls.name == name and method_class(name) is cls
    assert (cls.causal_only, cls.batch_rule, cls.uses_neurons, cls.common_filter, cls.languages,
            cls.shared_neurons, cls.needs_new) == (causal, rule, neurons, common, langs, shared, needs_new)
    assert cls.help and "\n" not in cls.help and issubclass(cls, EditMethod)
    assert ("neurons" in cls.context) == neurons and ("other" in cls.context) == shared
    assert ("other_new" in cls.context) == (langs == 2)          # only a method that rewrites both reads it
    assert cls.capabilities() == {"causal_only": causal, "batch_rule": rule, "uses_neurons": neurons,
                                  "common_filter": common, "languages": langs, "shared_neurons": shared,
                                  "needs_new": needs_new}


def test_the_table_is_every_method():
    assert list(METHODS) == list(CAPABILITIES)
    assert [d["name"] for d in describe()] == list(METHODS)
    assert {"ft-l", "ft-m"} <= set(METHODS) and "ft" not in METHODS


def test_ft_is_ft_ms_old_name():
    """"ft" (stored runs, scripts) is still FT-M: its class, options and edits; making the method by that name
    gives a DeprecationWarning."""
    assert ALIASES == {"ft": "ft-m"} and lookup("ft") is FtM is FT and lookup("no-such") is None
    assert method_class("ft") is FtM and option_names("ft") == option_names("ft-m")
    assert coerce("ft", ["norm_bound"], "1e-3") == 1e-3
    with pytest.warns(DeprecationWarning, match="'ft' is now 'ft-m'"):
        assert method_for("ft", norm_bound=1e-3) == FtM(norm_bound=1e-3)
    with pytest.raises(ConfigError, match="unknown editing method 'ft-x'"):
        method_class("ft-x")


@pytest.mark.parametrize("name", list(CAPABILITIES))
def test_string_and_class_give_the_same_method(name):
    cls = METHODS[name]
    m = method_for(name)
    assert type(m) is cls and m == cls() and method_for(m) is m and method_for(cls) == m
    assert method_for(name, **m.params()) == m                       # params() round-trips
    assert json.loads(json.dumps(m.params())) == m.params()           # and is JSON


def test_options_are_typed_fields_with_defaults():
    got = {o["name"]: o for o in options("rome")}
    assert list(got) == [f.name for f in fields(ROME)]
    assert got["layer"] == {"name": "layer", "type": "int | None", "default": None}
    assert got["clamp_norm"]["type"] == "float" and got["clamp_norm"]["default"] == ROME().clamp_norm
    assert got["insert"]["type"] == "one of 'auto', 'prompt', 'mean', 'start'"
    kn = {o["name"]: o for o in options("kn")}
    assert kn["localize"]["type"] == "LocateConfig" and kn["localize"]["default"]["steps"] == LOCALIZE.steps == 5
    assert KN().localize == LOCALIZE == LocateConfig(steps=5, rule="midpoint")
    meta = describe()
    assert json.loads(json.dumps(meta)) == meta


def test_nested_localize_from_a_dict_or_loose_options():
    assert KN(localize={"steps": 20}).localize == LocateConfig(steps=20, rule="midpoint")
    assert method_for("kn-opt", localize={"rule": "left"}).localize == LocateConfig(steps=5, rule="left")
    with pytest.raises(ConfigError, match="localize has no option nope") as err:
        KN(localize={"nope": 1})
    assert one_line(err)


@pytest.mark.parametrize("name,path,raw,want", [
    ("rome", ["clamp_norm"], "8", 8.0),
    ("rome", ["v_steps"], "12", 12),
    ("rome", ["layer"], "null", None),
    ("rome", ["stats"], "identity", "identity"),
    ("rome", ["stats"], '"identity"', "identity"),
    ("rome", ["use_prefixes"], "false", False),
    ("rome", ["corpus"], '["a b", "c"]', ["a b", "c"]),
    ("kn", ["lambda2"], "3", 3.0),
    ("kn", ["localize", "steps"], "20", 20),
    ("kn", ["localize", "method"], "amig", "amig"),
    ("kn", ["localize"], '{"steps": 20, "rule": "left"}', {"steps": 20, "rule": "left"}),
    ("kn", ["max_prompts"], "2", 2),
    ("ft-m", ["norm_bound"], "1e-3", 1e-3),
    ("ft-l", ["relative"], "true", True),
])
def test_coerce_reads_text_as_the_options_type(name, path, raw, want):
    got = coerce(name, path, raw)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("name,path,raw,words", [
    ("rome", ["clamp_norm"], "big", ["rome.clamp_norm", "float", "'big'"]),
    ("rome", ["v_steps"], "2.5", ["rome.v_steps", "int", "'2.5'"]),
    ("rome", ["insert"], "both", ["rome.insert", "'prompt'", "'both'"]),
    ("rome", ["use_prefixes"], "maybe", ["rome.use_prefixes", "bool", "'maybe'"]),
    ("rome", ["lr"], "1", ["rome has no option 'lr'", "clamp_norm"]),
    ("kn", ["localize", "nope"], "1", ["kn.localize has no option 'nope'", "steps"]),
    ("kn", ["localize"], "5", ["kn.localize", "JSON object", "steps"]),
    ("kn", ["localize"], '{"stepz": 1}', ["LocateConfig has no option stepz"]),
    ("rome", ["layer", "x"], "1", ["rome.layer", "no parts"]),
    ("nope", ["x"], "1", ["unknown editing method 'nope'", "kn, kn-eai"]),
])
def test_coerce_errors_are_one_line_and_name_the_option(name, path, raw, words):
    with pytest.raises(ConfigError) as err:
        coerce(name, path, raw)
    assert one_line(err) and all(w in str(err.value) for w in words), str(err.value)


def test_method_for_errors_name_the_methods_options():
    with pytest.raises(ConfigError, match=r"rome: unknown option\(s\) lr \(rome takes layer, stats") as err:
        method_for("rome", lr=1.0)
    assert one_line(err)
    with pytest.raises(ConfigError, match="go into the method object itself") as err:
        method_for(ROME(), layer=3)
    assert one_line(err)
    with pytest.raises(ConfigError, match="unknown editing method 'mend'") as err:
        method_for("mend")
    assert one_line(err)


def test_edit_takes_a_method_object_or_a_name_with_options():
    h = tiny_handle("gpt2")
    a = edit(h, FACT, "rome", method=KN(lambda2=3.0), neurons=[(0, 1), (1, 4)])
    b = edit(h, FACT, "rome", method="kn", lambda2=3.0, neurons=[(0, 1), (1, 4)])
    assert a.info == b.info and all(torch.equal(x.value, y.value) for x, y in zip(a.changes, b.changes))
    assert a.info["lambda2"] == 3.0
    with pytest.raises(ConfigError, match=r"kn: unknown option\(s\) other .*per edit: neurons") as err:
        edit(h, FACT, "rome", method="kn", neurons=[(0, 1)], other=FACT)        # context kn does not read
    assert one_line(err)
    with pytest.raises(ConfigError, match="go into the method object"):
        edit(h, FACT, "rome", method=KN(), lambda2=3.0)


def test_a_precomputed_moment_is_rome_context():
    h = tiny_handle("gpt2", dtype=torch.float32)
    kw = dict(layer=1, v_steps=2, use_prefixes=False)
    a = edit(h, FACT, "rome", method=ROME(**kw), moment=torch.eye(h.n_neurons))
    c = edit(h, FACT, "rome", method=ROME(stats="identity", **kw))
    assert a.info["stats"]["source"] == "given" and c.info["stats"]["source"] == "identity"
    assert torch.allclose(a.changes[0].value, c.changes[0].value, atol=1e-6)
    with pytest.raises(ConfigError, match="stats must be 'auto' or 'identity'") as err:   # a tensor is context
        edit(h, FACT, "rome", method="rome", stats=torch.eye(h.n_neurons), **kw)
    assert one_line(err)
