"""Validated option objects: the one place where the type and range of an option field are checked.

An option class is a dataclass that derives from :class:`Options` and lists its value rules in ``CHECKS``
(``{field: (check, ...)}``, a check returns ``None`` when the value is fine, else what is required). Its
``__post_init__`` checks every field against its type hint (``int`` fields take integers only, never
``bool``; ``float`` fields take finite ints or floats and store floats; ``Optional[X]`` also takes ``None``)
and then against ``CHECKS``; a problem raises :class:`OptionError` (``TypeError`` for a wrong type,
``ValueError`` for a value out of range) whose message starts with the field name::

    TrainConfig(clip=-1)      # OptionError: train.clip: must be > 0, got -1.0
    TrainConfig(steps="ten")  # OptionTypeError: train.steps: expected int, got 'ten'

Messages name a field by its dotted key in the YAML schema (``PREFIX``): the YAML schema
(:mod:`probflux.app.config`) builds its sections from the same classes, so Python and the command line report
the same ``train.clip: must be > 0, got -1.0``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Optional, Union, get_args, get_origin, get_type_hints

__all__ = ["Options", "OptionError", "OptionTypeError", "Check", "validate_options", "coerce", "show", "type_name",
           "choices", "at_least", "greater", "interval", "nonempty", "device"]

Check = Callable[[Any], Optional[str]]  # returns None when fine, else what is required


class OptionError(ValueError):
    """An option value out of range; ``key`` is the field (or dotted key) at fault."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class OptionTypeError(OptionError, TypeError):
    """An option value of the wrong type (also a ``TypeError``)."""


# ----------------------------------------------------------------------------------------- checks


def choices(*options: str) -> Check:
    return lambda v: None if v in options else "must be one of " + ", ".join(repr(o) for o in options)


def at_least(lo: float) -> Check:
    return lambda v: None if v is None or v >= lo else f"must be >= {lo}"


def greater(lo: float) -> Check:
    return lambda v: None if v is None or v > lo else f"must be > {lo}"


def interval(lo: float, hi: float, *, hi_open: bool) -> Check:
    bracket = ")" if hi_open else "]"

    def check(v: Any) -> Optional[str]:
        if v is None or (lo <= v < hi if hi_open else lo <= v <= hi):
            return None
        return f"must lie in [{lo}, {hi}{bracket}"

    return check


def nonempty(v: Any) -> Optional[str]:
    return None if v.strip() else "must not be empty"


def device(v: Any) -> Optional[str]:
    return None if re.fullmatch(r"auto|cpu|cuda|mps|cuda:\d+", v) else "must be 'auto', 'cpu', 'cuda', 'mps' or 'cuda:N'"


# ------------------------------------------------------------------------------------------ types


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` → ``(X, True)``; anything else → ``(tp, False)``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return tp, False


def type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if get_origin(base) is list:
        name = f"a list of {type_name(get_args(base)[0])}"
    else:
        name = "a mapping" if dataclasses.is_dataclass(base) else getattr(base, "__name__", str(base))
    return f"{name} or null" if optional else name


def show(v: Any) -> str:
    s = "null" if v is None else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the scalar type hint ``tp``; ints become floats for float fields.

    Raises :class:`OptionTypeError` (or :class:`OptionError` for a non-finite float) naming ``key``.
    """
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
    elif base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise OptionError(f"{key}: expected a finite float, got {show(value)}", key)
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif get_origin(base) is list:
        if isinstance(value, (list, tuple)):
            (item,) = get_args(base)
            return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    else:  # pragma: no cover - schema error
        raise TypeError(f"option schema: unsupported type {tp!r} for {key}")
    raise OptionTypeError(f"{key}: expected {type_name(tp)}, got {show(value)}", key)


def validate_options(obj: Any, checks: Optional[Mapping[str, Sequence[Check]]] = None, prefix: Optional[str] = None) -> None:
    """Check (and normalise in place) every non-dataclass field of the dataclass ``obj``: its type hint, then
    ``checks`` (default ``type(obj).CHECKS``). Nested option objects validate themselves. Messages name the field
    as ``prefix + name`` (default ``type(obj).PREFIX``, e.g. ``"train."``)."""
    cls = type(obj)
    checks = getattr(cls, "CHECKS", {}) if checks is None else checks
    prefix = getattr(cls, "PREFIX", "") if prefix is None else prefix
    hints = get_type_hints(cls)
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            continue
        key = prefix + f.name
        value = coerce(getattr(obj, f.name), tp, key)
        object.__setattr__(obj, f.name, value)
        for check in checks.get(f.name, ()):
            problem = check(value)
            if problem:
                raise OptionError(f"{key}: {problem}, got {show(value)}", key)


class Options:
    """Base of a validated option dataclass: ``__post_init__`` runs :func:`validate_options`."""

    CHECKS: ClassVar[Mapping[str, tuple[Check, ...]]] = {}
    PREFIX: ClassVar[str] = ""  # how messages name the fields: "train." gives "train.lr: must be > 0, got 0.0"

    def __post_init__(self) -> None:
        validate_options(self)

    def validate(self) -> None:
        """Check the fields again (e.g. after assigning to one)."""
        validate_options(self)
