"""Check one plain config tree against a schema dataclass: unknown keys, missing keys, types, choices,
ranges. Every failure is a ConfigError of one paragraph naming the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from typing import Any, Literal

from ..errors import ConfigError


@functools.cache
def hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def unknown_key(path: str, key: str, known) -> ConfigError:
    known = sorted(known)
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f" Did you mean `{_join(path, near[0])}`?" if near else ""
    return ConfigError(
        f"Config key `{_join(path, key)}` is not a known key (a typo in a preset or on the command line?).{hint} "
        f"Valid keys{' of `' + path + '`' if path else ''}: {', '.join(known)}."
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_missing(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def check_node(node: dict, cls, path: str = "", schema_for=None) -> None:
    """Recursively check `node` (a plain dict) against dataclass `cls`.

    schema_for(path, node) may return the dataclass of a sub-node typed `Any` (chosen by its `name`)."""
    if not isinstance(node, dict):
        raise ConfigError(f"Config key `{path}` is {node!r}, but it must be a group of keys ({cls.__name__}).")
    fields, types_ = fields_of(cls), hints(cls)
    for key in node:
        if key not in fields:
            raise unknown_key(path, str(key), fields)
    for name, f in fields.items():
        key = _join(path, name)
        if name not in node:
            if _is_missing(f):
                raise ConfigError(f"Config key `{key}` is missing; every option of this group must set it "
                                  f"(see the group's default YAML under conf/).")
            continue
        check_value(key, node[name], types_[name], f.metadata, schema_for)


def describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is list:
        return f"a list of ({describe(args[0])})"
    if origin is dict:
        return f"a mapping of names to ({describe(args[1])})"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(tp, str(tp))


def _bounds_text(meta) -> str:
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    text = " and ".join(f"{words[k]} {v}" for k, v in meta.get("bounds", {}).items())
    if meta.get("off_zero"):
        text += " (0 switches it off)"
    return text


def _type_ok(value, tp, key, meta, schema_for) -> bool:
    """True when `value` has type `tp`; nested nodes and lists are checked (and may raise) here too."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        if isinstance(value, dict) and schema_for is not None:
            check_node(value, schema_for(key, value), key, schema_for)
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a, key, meta, schema_for) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is list:
        if not isinstance(value, list):
            return False
        for i, v in enumerate(value):
            check_value(f"{key}[{i}]", v, args[0], {}, schema_for)
        return True
    if origin is dict:  # e.g. eval.lr_by_model {name: number}: keys are strings, each value checked
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return False
        for k, v in value.items():
            check_value(f"{key}.{k}", v, args[1], meta, schema_for)
        return True
    if dataclasses.is_dataclass(tp):
        check_node(value, tp, key, schema_for)
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    raise TypeError(f"schema type {tp} of `{key}` is not supported")


def _expected(tp, meta) -> str:
    """What a key accepts, in words: "a whole number > 0, or null"."""
    args = typing.get_args(tp)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
    core = [a for a in args if a is not type(None)] if optional else [tp]
    text = " or ".join(describe(a) for a in core)
    rng = _bounds_text(meta)
    return text + (f" {rng}" if rng else "") + (", or null" if optional else "")


def _literals(tp) -> list:
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return [v for a in typing.get_args(tp) for v in _literals(a)]


def check_value(key: str, value, tp, meta, schema_for=None) -> None:
    if not _type_ok(value, tp, key, meta, schema_for):
        words = [str(a) for a in _literals(tp) if isinstance(a, str)]
        near = difflib.get_close_matches(str(value), words, n=1, cutoff=0.5) if isinstance(value, str) else []
        raise ConfigError(f"Config key `{key}` is {value!r} ({type(value).__name__}), but it must be "
                          f"{_expected(tp, meta)}" + (f" (did you mean {near[0]!r}?)" if near else "") + ".")
    source = meta.get("choices")
    if source is not None and value is not None:
        allowed = list(source() if callable(source) else source)
        if value not in allowed:
            near = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
            raise ConfigError(f"Config key `{key}` is {value!r}, which is not allowed; choose one of: "
                              + ", ".join(repr(a) for a in allowed)
                              + (f" (did you mean {near[0]!r}?)" if near else "") + ".")
    bounds = meta.get("bounds")
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("off_zero") and value == 0:
            return
        ok = all({"gt": value > b, "ge": value >= b, "lt": value < b, "le": value <= b}[k]
                 for k, b in bounds.items())
        if not ok or not math.isfinite(value):  # NaN and Inf are never a setting
            raise ConfigError(f"Config key `{key}` is {value!r}, but it must be {_bounds_text(meta)}.")
