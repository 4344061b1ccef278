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
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros import config_check as check
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
            raise ConfigError(f"constraints: each name must be unique, got {names}")

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


def make_constraint(spec: Mapping[str, Any], nx: int, nu: int, index: int = 0, where: str = "") -> Constraint:
    """One constraint from its config mapping (see docs/SAFETY.md for the keys).

    Errors name the key path (`constraints[0].lower`; `where` overrides the `constraints[index]`)."""
    where = where or f"constraints[{index}]"
    spec = check.mapping(spec, where)
    kind = check.choice(spec.pop("kind", None), KINDS, f"{where}.kind")
    known = {"name", "kind", "variable", "active_dims", "strict", "tolerance"}
    known |= {"bounded": {"lower", "upper"}, "linear": {"A", "b"}, "quadratic": {"P", "b"}}[kind]
    check.no_unknown_keys(spec, known, f"{where} (kind {kind})")  # a typo first, not the key it misses
    name = check.text(spec.pop("name", f"{kind}_{index}"), f"{where}.name")
    variable = check.choice(spec.pop("variable", "state"), VARIABLES, f"{where}.variable")
    dim = {"state": nx, "input": nu, "input_and_state": nx + nu}[variable]
    dims_value = spec.pop("active_dims", None)
    dims = list(range(dim))
    if dims_value is not None:
        raw = np.atleast_1d(np.asarray(dims_value, dtype=object))
        if raw.ndim != 1 or not all(isinstance(d, Integral) and not isinstance(d, bool) for d in raw):
            raise ConfigError(f"{where}.active_dims: expected a list of integers, got {check.shown(dims_value)}")
        dims = [int(d) for d in raw]
    if not dims or len(set(dims)) != len(dims) or not all(0 <= d < dim for d in dims):
        raise ConfigError(f"{where}.active_dims: expected distinct indices in [0, {dim}), got {dims}")
    n = len(dims)
    strict = check.flag(spec.pop("strict", False), f"{where}.strict")
    tol_value = spec.pop("tolerance", None)
    if kind == "bounded":
        lower = check.array(spec.pop("lower", None), f"{where}.lower", 1)
        upper = check.array(spec.pop("upper", None), f"{where}.upper", 1)
        if lower.size == 1:
            lower = np.full(n, lower[0])
        if upper.size == 1:
            upper = np.full(n, upper[0])
        if lower.size != n or upper.size != n:
            raise ConfigError(f"{where}: lower and upper need {n} values (one per entry of active_dims), "
                              f"got {lower.size} and {upper.size}")
        if np.any(lower > upper):
            raise ConfigError(f"{where}: lower > upper in {np.flatnonzero(lower > upper).tolist()}")
        a = np.vstack([-np.eye(n), np.eye(n)])
        b = np.concatenate([-lower, upper])
    elif kind == "linear":
        a = check.array(spec.pop("A", None), f"{where}.A", 2)
        b = check.array(spec.pop("b", None), f"{where}.b", 1)
        if a.shape[0] < 1 or a.shape[1] != n or b.size != a.shape[0]:
            raise ConfigError(f"{where}: A must be (rows x {n}) and b have one entry per row; got {a.shape}, {b.size}")
    else:
        a = check.array(spec.pop("P", None), f"{where}.P", 2)
        b = check.array(spec.pop("b", None), f"{where}.b", 1)
        if a.shape != (n, n) or b.size != 1:
            raise ConfigError(f"{where}: P must be {n}x{n} and b one number; got {a.shape}, {b.size}")
    rows = 1 if kind == "quadratic" else a.shape[0]
    tolerance = np.zeros(0)
    if tol_value is not None:
        tolerance = check.array(tol_value, f"{where}.tolerance", 1)
        if tolerance.size == 1:
            tolerance = np.full(rows, tolerance[0])
        if tolerance.size != rows or np.any(tolerance < 0):
            raise ConfigError(f"{where}.tolerance: expected one or {rows} numbers >= 0, got {check.shown(tol_value)}")
    return Constraint(name, kind, variable, dim, dims, a, b, strict, tolerance)


def make_constraints(specs: Sequence[Mapping[str, Any]] | None, nx: int, nu: int) -> ConstraintSet:
    if specs is None:
        return ConstraintSet([])
    if not isinstance(specs, list | tuple):
        raise ConfigError(f"constraints: expected a list of mappings, got {check.shown(specs)}")
    return ConstraintSet([make_constraint(spec, nx, nu, i) for i, spec in enumerate(specs)])


def load_constraints(path: str | Path, nx: int, nu: int) -> ConstraintSet:
    """Constraints from a YAML file holding `constraints: [ {kind: ..., ...}, ... ]`.

    Errors name the file and the constraint; the same file serves the monitor, the controller and
    bag analysis.
    """
    file = Path(path)
    data = read_yaml(file, "constraints file")
    try:
        top = check.mapping(data, "top level")
        check.no_unknown_keys(top, ["constraints"], "top level")
        if "constraints" not in top:
            raise ConfigError("top level: the key 'constraints' (a list) is missing")
        return make_constraints(top["constraints"], nx, nu)
    except ConfigError as exc:
        raise ConfigError(f"constraints file '{file}': {exc}") from exc
