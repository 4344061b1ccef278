"""JSON for result files: JSON has no NaN or infinity, so a figure without data is written as null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float (in dicts, lists and tuples, at any depth) replaced by None."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def dumps(value: Any) -> str:
    """Strict JSON (indented, newline-terminated) of `value` with non-finite floats as null."""
    return json.dumps(finite_or_none(value), indent=2, allow_nan=False) + "\n"
