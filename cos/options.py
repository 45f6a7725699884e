"""Options as dataclasses: each field says how to read it, its help text and its command-line flag.

Every option group (the method's :class:`cos.pipeline.CoSConfig`, the scorer's
:class:`cos.scoring.ScorerConfig`, the runtime's run options, each backend's own options) is a dataclass
whose fields are declared with :func:`option`. From that one declaration:

* :func:`validate` reads and checks values given as strings, numbers or booleans (lmms-eval's
  ``model_args``, YAML, the command line) and raises :class:`~cos.errors.ConfigError` naming the option,
  the value and what is allowed (``scorer='clip': expected one of ['llava', 'self', 'uniform', 'oracle']``);
* :func:`parse` builds several groups from one flat mapping (``--model_args k=v,...``) and names the
  unknown keys together with every valid one;
* :func:`add_arguments` generates ``argparse`` flags (``--shot-size``, plus declared aliases);
* :func:`identity` lists the values that change an answer (a result-cache key).

Choice lists live with the code that implements them (``cos.shots.LEFTOVERS``, ``cos.scoring.SCORERS``,
...) and are passed in here, never written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cos.errors import ConfigError

__all__ = ["add_arguments", "as_bool", "choice", "dataclass_fields", "identity", "number", "option", "optional_path", "parse",
           "positive_int", "validate", "values_from_args"]

_META = "cos_option"


def option(default: Any = dataclasses.MISSING, *, help: str = "", read: Callable[[str, Any], Any] | None = None,
           flags: tuple[str, ...] = (), identity: bool | str = True, cli: bool = True, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a reader (``read(name, value) -> value``, raising ConfigError), a help text,
    extra command-line ``flags``, whether it belongs to the answer's ``identity`` (True, False, or ``"set"``:
    only when its value is not the default — a new option that leaves the identities of existing
    configurations, and so their cache keys, unchanged) and whether ``cos run`` offers it (``cli``)."""
    if identity not in (True, False, "set"):
        raise ValueError(f"identity must be True, False or 'set', got {identity!r}")
    meta = {_META: {"help": help, "read": read, "flags": tuple(flags), "identity": identity, "cli": cli}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _meta(f: dataclasses.Field) -> dict:
    return f.metadata.get(_META, {"help": "", "read": None, "flags": (), "identity": True, "cli": True})


def dataclass_fields(cls_or_obj) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls_or_obj) if f.init]


# -- readers -------------------------------------------------------------------------------------------
def _bad(name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{name}={value!r}: expected {expected}")


def as_bool(name: str, value: Any) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case) or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise _bad(name, value, "true or false")


def _int_at_least(name: str, value: Any, lowest: int, expected: str) -> int:
    if isinstance(value, bool):
        raise _bad(name, value, expected)
    try:
        number = int(value)
        exact = float(value) == number
    except (TypeError, ValueError):
        raise _bad(name, value, expected) from None
    if number < lowest or not exact:
        raise _bad(name, value, expected)
    return number


def positive_int(name: str, value: Any) -> int:
    return _int_at_least(name, value, 1, "a positive integer")


def non_negative_int(name: str, value: Any) -> int:
    return _int_at_least(name, value, 0, "an integer >= 0")


def number(lo: float, hi: float, special: Iterable[str] = ()) -> Callable[[str, Any], Any]:
    """A reader for a float in ``[lo, hi]``, or one of the ``special`` words (kept as strings)."""
    special = tuple(special)

    def read(name: str, value: Any):
        if str(value) in special:
            return str(value)
        words = " or ".join([repr(s) for s in special] + [f"a number in [{lo:g}, {hi:g}]"])
        if isinstance(value, bool):
            raise _bad(name, value, words)
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise _bad(name, value, words) from None
        if not math.isfinite(x) or not lo <= x <= hi:
            raise _bad(name, value, words)
        return x

    return read


def choice(choices: Iterable[str]) -> Callable[[str, Any], str]:
    """A reader that accepts one of ``choices`` (the tuple owned by the implementing module)."""
    choices = tuple(choices)

    def read(name: str, value: Any) -> str:
        if str(value) not in choices:
            raise _bad(name, value, f"one of {list(choices)}")
        return str(value)

    return read


def optional_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in ("", "none", "null") else text


def optional_path(name: str, value: Any) -> str | None:
    """A file or folder path made absolute (not checked here: its user says what it must hold), or None
    (``none``/``null``/empty)."""
    text = optional_str(name, value)
    return None if text is None else os.path.abspath(os.path.expanduser(text))


def cache_dir(name: str, value: Any) -> str | None:
    """``auto`` (kept; resolved against the trace folder later), a folder (made absolute), or off
    (``none``/``off``/``false``/``0``/``no``/empty)."""
    if value is None or value is False:
        return None
    if value is True:
        raise _bad(name, value, "a directory, 'auto' or 'none'")
    text = str(value).strip()
    if text.lower() in ("", "none", "off", "false", "0", "no"):
        return None
    return "auto" if text.lower() == "auto" else os.path.abspath(text)


# -- using the declarations ---------------------------------------------------------------------------
def validate(obj) -> None:
    """Read every field of the dataclass instance ``obj`` through its reader, in place."""
    for f in dataclass_fields(obj):
        read = _meta(f)["read"]
        value = getattr(obj, f.name)
        if read is not None and value is not None:
            setattr(obj, f.name, read(f.name, value))


def parse(groups: Mapping[str, type], kwargs: Mapping[str, Any], what: str = "model_args") -> dict[str, Any]:
    """Split a flat ``kwargs`` among option classes (``{"run": RunOptions, "backend": LongVAOptions, ...}``)
    and build each. A name must belong to exactly one group; unknown names are reported with all valid ones."""
    owner: dict[str, str] = {}
    for group, cls in groups.items():
        for f in dataclass_fields(cls):
            if f.name in owner:
                raise ValueError(f"option {f.name!r} is declared by both {owner[f.name]!r} and {group!r}")
            owner[f.name] = group
    unknown = sorted(set(kwargs) - set(owner))
    if unknown:
        raise ConfigError(f"unknown {what} {unknown} for this model; valid: {', '.join(owner)}")
    parts = {group: {} for group in groups}
    for key, value in kwargs.items():
        parts[owner[key]][key] = value
    return {group: cls(**parts[group]) for group, cls in groups.items()}


def identity(obj) -> dict:
    """The fields of ``obj`` that change an answer (``identity=True``, or ``"set"`` and not the default), as
    plain values; an existing local path (a checkpoint folder) is made absolute, so the same checkpoint
    named two ways is one identity."""
    out = {}
    for f in dataclass_fields(obj):
        kind = _meta(f)["identity"]
        if not kind:
            continue
        value = getattr(obj, f.name)
        if kind == "set" and f.default is not dataclasses.MISSING and value == f.default:
            continue
        if isinstance(value, str) and os.path.isdir(value):
            value = os.path.abspath(value)
        out[f.name] = value
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, skip: Iterable[str] = (), title: str | None = None,
                  description: str | None = None) -> list[str]:
    """One command-line flag per field of ``cls`` (``--field-name`` plus declared aliases); values stay
    strings/None and are read by :func:`validate` when the dataclass is built (see :func:`values_from_args`).
    Fields named in ``skip`` (already added) are left out. Returns the names added."""
    skip, added = set(skip), []
    group = parser.add_argument_group(title, description) if title else parser
    for f in dataclass_fields(cls):
        meta = _meta(f)
        if f.name in skip or not meta["cli"]:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "" if default in (None, "") else f" (default: {default})"
        extra = {"nargs": "?", "const": "true"} if f.type in (bool, "bool") else {}  # --flag alone means true
        group.add_argument(_flag(f.name), *meta["flags"], dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                           help=(meta["help"] + shown).strip(), **extra)
        added.append(f.name)
    return added


def values_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of ``cls``'s fields that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclass_fields(cls) if hasattr(args, f.name)}
