"""A dynamical system defined by a symbolic CasADi model: x_dot = f(x, u; params).

Every system family builds one `SymbolicModel`; the numeric helpers (RK4 stepping, linearization)
are CasADi functions generated once from the same expression, so the plant, the controllers and the
learning code all integrate exactly the same dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import casadi as ca
import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros.errors import ConfigError

FloatArray = NDArray[np.float64]

# Builds the continuous-time dynamics from the state/input symbols and the parameter values.
DynamicsBuilder = Callable[[ca.SX, ca.SX, Mapping[str, float]], ca.SX]


def as_vector(value: ArrayLike, size: int, what: str) -> FloatArray:
    """Convert `value` to a finite float vector of length `size`, or raise naming `what`."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected {size} numbers, got {value!r}") from exc
    if arr.size != size:
        raise ConfigError(f"{what}: expected a vector of size {size}, got size {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what}: contains non-finite values {arr.tolist()}")
    return arr


@dataclass(frozen=True)
class ParamSpec:
    """A physical parameter: its default and the open/closed interval of valid values."""

    default: float
    doc: str
    positive: bool = True

    def validate(self, name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ConfigError(f"parameter '{name}': expected a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise ConfigError(f"parameter '{name}': must be finite, got {v}")
        if self.positive and v <= 0.0:
            raise ConfigError(f"parameter '{name}': must be > 0 ({self.doc}), got {v}")
        return v


@dataclass
class SymbolicModel:
    """A continuous-time model with numpy helpers generated from one CasADi expression."""

    name: str
    state_names: tuple[str, ...]
    input_names: tuple[str, ...]
    params: dict[str, float]
    input_low: FloatArray
    input_high: FloatArray
    u_eq: FloatArray
    x_eq: FloatArray
    builder: DynamicsBuilder
    substeps: int = 1
    _fun: ca.Function = field(init=False, repr=False)
    _jac: ca.Function = field(init=False, repr=False)
    _step_cache: dict[tuple[float, int], ca.Function] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.substeps < 1:
            raise ConfigError(f"substeps must be >= 1, got {self.substeps}")
        x = ca.SX.sym("x", self.nx)
        u = ca.SX.sym("u", self.nu)
        xdot = self.builder(x, u, self.params)
        self._fun = ca.Function(f"{self.name}_f", [x, u], [xdot], ["x", "u"], ["x_dot"])
        self._jac = ca.Function(
            f"{self.name}_jac", [x, u], [ca.jacobian(xdot, x), ca.jacobian(xdot, u)], ["x", "u"], ["A", "B"]
        )

    @property
    def nx(self) -> int:
        return len(self.state_names)

    @property
    def nu(self) -> int:
        return len(self.input_names)

    @property
    def input_bounds(self) -> tuple[FloatArray, FloatArray]:
        return self.input_low.copy(), self.input_high.copy()

    @property
    def symbolic(self) -> ca.Function:
        """The CasADi function (x, u) -> x_dot; call it with SX/MX symbols to embed the model."""
        return self._fun

    def equilibrium(self) -> tuple[FloatArray, FloatArray]:
        return self.x_eq.copy(), self.u_eq.copy()

    def f(self, x: ArrayLike, u: ArrayLike) -> FloatArray:
        xv = as_vector(x, self.nx, f"{self.name} state")
        uv = as_vector(u, self.nu, f"{self.name} input")
        return np.asarray(self._fun(xv, uv), dtype=np.float64).reshape(-1)

    def linearize(self, x: ArrayLike, u: ArrayLike) -> tuple[FloatArray, FloatArray]:
        xv = as_vector(x, self.nx, f"{self.name} state")
        uv = as_vector(u, self.nu, f"{self.name} input")
        a, b = self._jac(xv, uv)
        return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def rk4_function(self, dt: float, substeps: int | None = None) -> ca.Function:
        """CasADi function (x, u) -> x after `dt` with `substeps` RK4 steps (u held constant)."""
        n = self.substeps if substeps is None else int(substeps)
        if not (math.isfinite(dt) and dt > 0.0):
            raise ConfigError(f"dt must be a positive number, got {dt}")
        if n < 1:
            raise ConfigError(f"substeps must be >= 1, got {n}")
        key = (float(dt), n)
        if key not in self._step_cache:
            x = ca.SX.sym("x", self.nx)
            u = ca.SX.sym("u", self.nu)
            h = dt / n
            xk = x
            for _ in range(n):
                k1 = self._fun(xk, u)
                k2 = self._fun(xk + 0.5 * h * k1, u)
                k3 = self._fun(xk + 0.5 * h * k2, u)
                k4 = self._fun(xk + h * k3, u)
                xk = xk + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
            self._step_cache[key] = ca.Function(f"{self.name}_rk4_{n}", [x, u], [xk], ["x", "u"], ["x_next"])
        return self._step_cache[key]

    def step(self, x: ArrayLike, u: ArrayLike, dt: float, substeps: int | None = None) -> FloatArray:
        """Integrate from x over dt with input u held (RK4, `substeps` steps; default self.substeps)."""
        xv = as_vector(x, self.nx, f"{self.name} state")
        uv = as_vector(u, self.nu, f"{self.name} input")
        fun = self.rk4_function(dt, substeps)
        return np.asarray(fun(xv, uv), dtype=np.float64).reshape(-1)


def resolve_params(
    system: str, specs: Mapping[str, ParamSpec], overrides: Mapping[str, object]
) -> dict[str, float]:
    """Defaults updated by `overrides`; unknown names and invalid values raise ConfigError."""
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise ConfigError(
            f"system '{system}': unknown parameter(s) {unknown}; known: {sorted(specs)}"
        )
    params = {k: spec.default for k, spec in specs.items()}
    for k, v in overrides.items():
        params[k] = specs[k].validate(k, v)
    return params

