"""Checks for values read from config files: each error names the key path and what was expected.

Key paths read like the file: `disturbances[1].magnitude`, `constraints[0].lower`, `trainer.lr`.
The loaders put the file in front, so a message reads
`disturbance scenario 'gusts.yaml': disturbances[1].magnitude: expected a finite number or 6 finite
numbers, got 'strong'`. Only YAML's own types pass: a quoted "1.5" is not a number, `yes` is not a
count, and a key nobody reads is an error (a typo must never fall back to a default silently).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from safe_ctrl_ros.errors import ConfigError

if TYPE_CHECKING:  # the systems package imports CasADi: not needed to check a value
    from safe_ctrl_ros.systems.base import FloatArray


def join(where: str, key: str | int) -> str:
    """The path of `key` inside `where`: join('a', 'b') = 'a.b', join('a', 1) = 'a[1]'."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def shown(value: Any) -> str:
    """`value` for an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A copy of a mapping with text keys."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {shown(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be text, got {shown(key)}")
    return dict(value)


def no_unknown_keys(spec: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    known_keys = sorted(known)
    unknown = sorted(set(spec) - set(known_keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {known_keys}")


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_num(high)}"
    return ""


def number(
    value: Any, where: str, low: float | None = None, high: float | None = None, *,
    low_open: bool = False, high_open: bool = False,
) -> float:
    """A finite real number (not a bool, not text) within the given bounds."""
    expected = f"a finite number{_range(low, high, low_open, high_open)}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{where}: expected {expected}, got {shown(value)}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if (
        not math.isfinite(out)
        or (low is not None and (out <= low if low_open else out < low))
        or (high is not None and (out >= high if high_open else out > high))
    ):
        raise ConfigError(f"{where}: expected {expected}, got {shown(value)}")
    return out


def integer(value: Any, where: str, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool, not 2.0) within the given bounds."""
    expected = f"an integer{_range(low, high, False, False)}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{where}: expected {expected}, got {shown(value)}")
    out = int(value)
    if (low is not None and out < low) or (high is not None and out > high):
        raise ConfigError(f"{where}: expected {expected}, got {shown(value)}")
    return out


def choice(value: Any, choices: Iterable[str], where: str) -> str:
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{where}: expected one of {options}, got {shown(value)}")
    return value


def flag(value: Any, where: str) -> bool:
    """true or false (YAML booleans only: the text 'false' is not false)."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
    return bool(value)


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected text, got {shown(value)}")
    return value


def array(value: Any, where: str, ndim: int) -> FloatArray:
    """Finite numbers as a float vector (ndim 1; a single number becomes one entry) or matrix (ndim 2)."""
    what = "a number or a list of numbers" if ndim == 1 else "a matrix (a list of rows of numbers)"
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise ConfigError(f"{where}: expected {what}, got {shown(value)}") from exc
    if raw.dtype.kind not in "iuf" or (raw.size == 0 and not isinstance(value, list | tuple)):
        raise ConfigError(f"{where}: expected {what}, got {shown(value)}")
    arr = np.atleast_1d(raw.astype(np.float64)) if ndim == 1 else raw.astype(np.float64)
    if arr.ndim != ndim:
        raise ConfigError(f"{where}: expected {what}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{where}: expected finite numbers, got {shown(value)}")
    return arr
