"""State and input constraints in safe-control-gym's taxonomy, evaluated as g(z) <= 0.

Each constraint acts on z = the state, the input, or [state, input] ("input_and_state"),
restricted to `active_dims`. Kinds:
- bounded:   lower <= z_a <= upper        g = [lower - z_a; z_a - upper]
- linear:    A z_a <= b                   g = A z_a - b
- quadratic: z_a^T P z_a <= b             g = z_a^T P z_a - b
A row is violated when g > 0 (g >= 0 with `strict`), almost active when g + tolerance > 0.
The margin is -g: how far the row is from its bound. Non-finite values are violations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.systems.base import FloatArray

BoolArray = NDArray[np.bool_]

VARIABLES = ("state", "input", "input_and_state")
KINDS = ("bounded", "linear", "quadratic")


@dataclass
class Constraint:
    name: str
    kind: str
    variable: str
    dim: int  # size of the full constrained variable
    active_dims: list[int]
    A: FloatArray  # linear/bounded: rows of A z_a <= b; quadratic: P
    b: FloatArray
    strict: bool = False
    tolerance: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def num_rows(self) -> int:
        return 1 if self.kind == "quadratic" else int(self.A.shape[0])

    def select(self, x: FloatArray, u: FloatArray) -> FloatArray:
        z = {"state": x, "input": u, "input_and_state": np.concatenate([x, u])}[self.variable]
        return z[self.active_dims]

    def values(self, x: ArrayLike, u: ArrayLike) -> FloatArray:
        """g(z) for each row (<= 0 is satisfied)."""
        za = self.select(np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(u, dtype=np.float64).reshape(-1))
        with np.errstate(invalid="ignore", over="ignore"):
            g = np.array([za @ self.A @ za - self.b[0]]) if self.kind == "quadratic" else self.A @ za - self.b
        return np.where(np.isfinite(g), g, np.inf)

    def violated(self, g: FloatArray) -> BoolArray:
        return g >= 0 if self.strict else g > 0

    def almost_active(self, g: FloatArray) -> BoolArray:
        if self.tolerance.size == 0:
            return np.zeros(g.shape, dtype=bool)
        return g + self.tolerance > 0

    def row_names(self) -> list[str]:
        if self.kind == "bounded":
            n = len(self.active_dims)
            return [f"{self.name}[{i}]{side}" for side in ("_lower", "_upper") for i in range(n)]
        return [f"{self.name}[{i}]" for i in range(self.num_rows)]


@dataclass
class Evaluation:
    values: FloatArray  # g per row, all constraints concatenated
    violated: BoolArray  # per row
    almost_active: BoolArray  # per row

    @property
    def margins(self) -> FloatArray:
        return -self.values

    @property
    def any_violated(self) -> bool:
        return bool(np.any(self.violated))


class ConstraintSet:
    """All constraints of a run; evaluate(x, u) gives every row's value, violation and activity."""

    def __init__(self, constraints: Sequence[Constraint]) -> None:
        self.constraints = list(constraints)
        names = [c.name for c in self.constraints]
        if len(set(names)) != len(names):
            raise ConfigError(f"constraint names must be unique, got {names}")

    @property
    def row_names(self) -> list[str]:
        return [n for c in self.constraints for n in c.row_names()]

    def evaluate(self, x: ArrayLike, u: ArrayLike) -> Evaluation:
        if not self.constraints:
            empty = np.zeros(0)
            return Evaluation(empty, empty.astype(bool), empty.astype(bool))
        gs = [c.values(x, u) for c in self.constraints]
        viol = [c.violated(g) for c, g in zip(self.constraints, gs, strict=True)]
        near = [c.almost_active(g) for c, g in zip(self.constraints, gs, strict=True)]
        return Evaluation(np.concatenate(gs), np.concatenate(viol), np.concatenate(near))

    def state_only(self) -> ConstraintSet:
        return ConstraintSet([c for c in self.constraints if c.variable == "state"])


def _array(value: Any, what: str, ndim: int) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected numbers, got {value!r}") from exc
    if ndim == 1:
        arr = np.atleast_1d(arr)
    if arr.ndim != ndim:
        raise ConfigError(f"{what}: expected a {'vector' if ndim == 1 else 'matrix'}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what}: contains non-finite values")
    return arr


def make_constraint(spec: Mapping[str, Any], nx: int, nu: int, index: int = 0) -> Constraint:
    """One constraint from its config mapping (see docs/CONSTRAINTS.md for the keys)."""
    spec = dict(spec)
    kind = str(spec.pop("kind", ""))
    name = str(spec.pop("name", f"{kind}_{index}"))
    where = f"constraint '{name}'"
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {KINDS}, got '{kind}'")
    variable = str(spec.pop("variable", "state"))
    if variable not in VARIABLES:
        raise ConfigError(f"{where}: variable must be one of {VARIABLES}, got '{variable}'")
    dim = {"state": nx, "input": nu, "input_and_state": nx + nu}[variable]
    dims_value = spec.pop("active_dims", None)
    dims = list(range(dim)) if dims_value is None else [int(d) for d in np.atleast_1d(dims_value)]
    if not dims or len(set(dims)) != len(dims) or not all(0 <= d < dim for d in dims):
        raise ConfigError(f"{where}: active_dims must be distinct indices in [0, {dim}), got {dims}")
    n = len(dims)
    strict = bool(spec.pop("strict", False))
    tol_value = spec.pop("tolerance", None)
    if kind == "bounded":
        lower = _array(spec.pop("lower", None), f"{where}: lower", 1)
        upper = _array(spec.pop("upper", None), f"{where}: upper", 1)
        if lower.size == 1:
            lower = np.full(n, lower[0])
        if upper.size == 1:
            upper = np.full(n, upper[0])
        if lower.size != n or upper.size != n:
            raise ConfigError(f"{where}: lower and upper need {n} values (one per active dim)")
        if np.any(lower > upper):
            raise ConfigError(f"{where}: lower > upper in {np.flatnonzero(lower > upper).tolist()}")
        a = np.vstack([-np.eye(n), np.eye(n)])
        b = np.concatenate([-lower, upper])
    elif kind == "linear":
        a = _array(spec.pop("A", None), f"{where}: A", 2)
        b = _array(spec.pop("b", None), f"{where}: b", 1)
        if a.shape[1] != n or b.size != a.shape[0]:
            raise ConfigError(f"{where}: A must be (rows x {n}) and b have one entry per row; got {a.shape}, {b.size}")
    else:
        a = _array(spec.pop("P", None), f"{where}: P", 2)
        b = _array(spec.pop("b", None), f"{where}: b", 1)
        if a.shape != (n, n) or b.size != 1:
            raise ConfigError(f"{where}: P must be {n}x{n} and b one number; got {a.shape}, {b.size}")
    rows = 1 if kind == "quadratic" else a.shape[0]
    tolerance = np.zeros(0)
    if tol_value is not None:
        tolerance = _array(tol_value, f"{where}: tolerance", 1)
        if tolerance.size == 1:
            tolerance = np.full(rows, tolerance[0])
        if tolerance.size != rows or np.any(tolerance < 0):
            raise ConfigError(f"{where}: tolerance needs {rows} non-negative values")
    if spec:
        raise ConfigError(f"{where}: unknown key(s) {sorted(spec)}")
    return Constraint(name, kind, variable, dim, dims, a, b, strict, tolerance)


def make_constraints(specs: Sequence[Mapping[str, Any]] | None, nx: int, nu: int) -> ConstraintSet:
    if specs is None:
        return ConstraintSet([])
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"constraints must be a list of mappings, got {type(specs).__name__}")
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ConfigError(f"constraint #{i}: expected a mapping, got {spec!r}")
        out.append(make_constraint(spec, nx, nu, i))
    return ConstraintSet(out)


def load_constraints(path: str | Path, nx: int, nu: int) -> ConstraintSet:
    """Constraints from a YAML file holding `constraints: [ {kind: ..., ...}, ... ]`.

    Errors name the file and the constraint; the same file serves the monitor, the controller and
    bag analysis.
    """
    file = Path(path)
    data = read_yaml(file, "constraints file")
    if not isinstance(data, dict) or "constraints" not in data:
        raise ConfigError(f"constraints file '{file}': expected a mapping with the key 'constraints'")
    unknown = sorted(set(data) - {"constraints"})
    if unknown:
        raise ConfigError(f"constraints file '{file}': unknown top-level key(s) {unknown}")
    try:
        return make_constraints(data["constraints"], nx, nu)
    except ConfigError as exc:
        raise ConfigError(f"constraints file '{file}': {exc}") from exc
