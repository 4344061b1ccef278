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

# Builds the continuous-time dynamics from the state, input and external-wrench symbols and the
# parameter values. The wrench w = [fx, fy, fz, tx, ty, tz] is in the world frame (N, N m); each
# system documents which components act on it.
DynamicsBuilder = Callable[[ca.SX, ca.SX, ca.SX, Mapping[str, float]], ca.SX]
WRENCH_SIZE = 6
AXES = ("x", "y", "z")  # world axes, in this order wherever positions are 3-vectors


def as_vector(value: ArrayLike, size: int, what: str) -> FloatArray:
    """Convert `value` to a finite float vector of length `size`, or raise naming `what`."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected {size} numbers, got {value!r}") from exc
    if arr.size != size:
        raise ConfigError(f"{what}: expected a vector of size {size}, got size {arr.size}")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        shown = arr.tolist() if arr.size <= 12 else f"{bad.size} of {arr.size}, first at index {int(bad[0])}"
        raise ConfigError(f"{what}: contains non-finite values ({shown})")
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
    wrench_axes: tuple[str, ...] = ()
    # Out-of-bounds limits of the state (the episode terminates outside them); inf = unbounded.
    state_low: FloatArray = field(default_factory=lambda: np.zeros(0))
    state_high: FloatArray = field(default_factory=lambda: np.zeros(0))
    # What the state entries are (the one place that says it; tasks, reports and benchmarks read it):
    # `position_indices` hold positions in m along the world axes `position_axes` (in that order),
    # `velocity_indices` their rates in m/s (same order), `angle_indices` angles in rad. Other
    # entries (angular rates) are none of these.
    position_axes: tuple[str, ...] = ()
    position_indices: tuple[int, ...] = ()
    velocity_indices: tuple[int, ...] = ()
    angle_indices: tuple[int, ...] = ()
    _fun: ca.Function = field(init=False, repr=False)
    _fun_w: ca.Function = field(init=False, repr=False)
    _jac: ca.Function = field(init=False, repr=False)
    _step_cache: dict[tuple[float, int], ca.Function] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.substeps < 1:
            raise ConfigError(f"substeps must be >= 1, got {self.substeps}")
        if self.state_low.size == 0:
            self.state_low = np.full(self.nx, -np.inf)
        if self.state_high.size == 0:
            self.state_high = np.full(self.nx, np.inf)
        self._check_layout()
        x = ca.SX.sym("x", self.nx)
        u = ca.SX.sym("u", self.nu)
        w = ca.SX.sym("w", WRENCH_SIZE)
        xdot_w = self.builder(x, u, w, self.params)
        xdot = ca.substitute(xdot_w, w, ca.DM.zeros(WRENCH_SIZE))
        self._fun_w = ca.Function(f"{self.name}_fw", [x, u, w], [xdot_w], ["x", "u", "w"], ["x_dot"])
        self._fun = ca.Function(f"{self.name}_f", [x, u], [xdot], ["x", "u"], ["x_dot"])
        self._jac = ca.Function(
            f"{self.name}_jac", [x, u], [ca.jacobian(xdot, x), ca.jacobian(xdot, u)], ["x", "u"], ["A", "B"]
        )

    def _check_layout(self) -> None:
        axes, pos, vel = self.position_axes, self.position_indices, self.velocity_indices
        if not len(axes) == len(pos) == len(vel):
            raise ConfigError(f"{self.name}: position_axes {axes}, position_indices {pos} and velocity_indices "
                              f"{vel} must have one entry per axis")
        if len(set(axes)) != len(axes) or any(a not in AXES for a in axes):
            raise ConfigError(f"{self.name}: position_axes must be different letters of 'xyz', got {axes}")
        entries = [*pos, *vel, *self.angle_indices]
        if len(set(entries)) != len(entries) or any(not 0 <= i < self.nx for i in entries):
            raise ConfigError(f"{self.name}: position, velocity and angle indices must be different state "
                              f"entries in [0, {self.nx}), got {pos}, {vel}, {self.angle_indices}")

    def position_slot(self, axis: str) -> tuple[int, int] | None:
        """(position index, velocity index) of world axis `axis` ('x', 'y', 'z'); None: not modelled."""
        if axis not in self.position_axes:
            return None
        k = self.position_axes.index(axis)
        return self.position_indices[k], self.velocity_indices[k]

    @property
    def position_names(self) -> tuple[str, ...]:
        return tuple(self.state_names[i] for i in self.position_indices)

    @property
    def angle_names(self) -> tuple[str, ...]:
        return tuple(self.state_names[i] for i in self.angle_indices)

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

    @property
    def symbolic_with_wrench(self) -> ca.Function:
        """The CasADi function (x, u, w) -> x_dot with an external world-frame wrench w (6)."""
        return self._fun_w

    def out_of_bounds(self, x: ArrayLike) -> list[str]:
        """Names of the state entries outside the termination bounds (non-finite counts as outside)."""
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(xv) | (xv < self.state_low) | (xv > self.state_high)
        return [self.state_names[i] for i in np.flatnonzero(bad)]

    def equilibrium(self) -> tuple[FloatArray, FloatArray]:
        return self.x_eq.copy(), self.u_eq.copy()

    def f(self, x: ArrayLike, u: ArrayLike, w: ArrayLike | None = None) -> FloatArray:
        """x_dot at (x, u), with an optional external wrench w = [fx, fy, fz, tx, ty, tz]."""
        xv = as_vector(x, self.nx, f"{self.name} state")
        uv = as_vector(u, self.nu, f"{self.name} input")
        if w is None:
            return np.asarray(self._fun(xv, uv), dtype=np.float64).reshape(-1)
        wv = as_vector(w, WRENCH_SIZE, f"{self.name} wrench")
        return np.asarray(self._fun_w(xv, uv, wv), dtype=np.float64).reshape(-1)

    def linearize(self, x: ArrayLike, u: ArrayLike) -> tuple[FloatArray, FloatArray]:
        xv = as_vector(x, self.nx, f"{self.name} state")
        uv = as_vector(u, self.nu, f"{self.name} input")
        a, b = self._jac(xv, uv)
        return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def rk4_function(self, dt: float, substeps: int | None = None) -> ca.Function:
        """CasADi function (x, u, w) -> x after `dt` with `substeps` RK4 steps (u, w held)."""
        n = self.substeps if substeps is None else int(substeps)
        if not (math.isfinite(dt) and dt > 0.0):
            raise ConfigError(f"dt must be a positive number, got {dt}")
        if n < 1:
            raise ConfigError(f"substeps must be >= 1, got {n}")
        key = (float(dt), n)
        if key not in self._step_cache:
            x = ca.SX.sym("x", self.nx)
            u = ca.SX.sym("u", self.nu)
            w = ca.SX.sym("w", WRENCH_SIZE)
            h = dt / n
            xk = x
            for _ in range(n):
                k1 = self._fun_w(xk, u, w)
                k2 = self._fun_w(xk + 0.5 * h * k1, u, w)
                k3 = self._fun_w(xk + 0.5 * h * k2, u, w)
                k4 = self._fun_w(xk + h * k3, u, w)
                xk = xk + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
            self._step_cache[key] = ca.Function(
                f"{self.name}_rk4_{n}", [x, u, w], [xk], ["x", "u", "w"], ["x_next"]
            )
        return self._step_cache[key]

    def step(
        self, x: ArrayLike, u: ArrayLike, dt: float, substeps: int | None = None, w: ArrayLike | None = None
    ) -> FloatArray:
        """Integrate from x over dt with input u (and wrench w) held: RK4 with `substeps` steps."""
        xv = as_vector(x, self.nx, f"{self.name} state")
        uv = as_vector(u, self.nu, f"{self.name} input")
        wv = np.zeros(WRENCH_SIZE) if w is None else as_vector(w, WRENCH_SIZE, f"{self.name} wrench")
        fun = self.rk4_function(dt, substeps)
        return np.asarray(fun(xv, uv, wv), dtype=np.float64).reshape(-1)


def _pairs(model: SymbolicModel, x: ArrayLike, ref: ArrayLike) -> tuple[FloatArray, FloatArray, bool]:
    xs = np.asarray(x, dtype=np.float64)
    rs = np.asarray(ref, dtype=np.float64)
    single = xs.ndim == 1 and rs.ndim == 1
    xs, rs = np.atleast_2d(xs), np.atleast_2d(rs)
    if xs.shape[-1] != model.nx or rs.shape[-1] != model.nx:
        raise ConfigError(f"{model.name}: states and references must have {model.nx} entries, "
                          f"got {xs.shape[-1]} and {rs.shape[-1]}")
    return xs, rs, single


def position_error(model: SymbolicModel, x: ArrayLike, ref: ArrayLike) -> float | FloatArray:
    """Distance in m between the positions of state x and reference ref (`model.position_indices`).

    x and ref are one state (gives a float) or rows of states (gives one distance per row; a single
    reference is compared with every row).
    """
    xs, rs, single = _pairs(model, x, ref)
    idx = list(model.position_indices)
    d: FloatArray = np.linalg.norm(xs[:, idx] - rs[:, idx], axis=1)
    return float(d[0]) if single else d


def angle_error(model: SymbolicModel, x: ArrayLike, ref: ArrayLike) -> float | FloatArray:
    """Norm in rad of the angle differences (`model.angle_indices`), each wrapped into [-pi, pi).

    Shapes as `position_error`; 0 for a system without angles (quadrotor_1d).
    """
    xs, rs, single = _pairs(model, x, ref)
    idx = list(model.angle_indices)
    diff = np.mod(xs[:, idx] - rs[:, idx] + math.pi, 2.0 * math.pi) - math.pi
    d: FloatArray = np.linalg.norm(diff, axis=1)
    return float(d[0]) if single else d


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

