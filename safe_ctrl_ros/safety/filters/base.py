"""What every safety filter shares: the prediction model, the margins, the report.

A filter takes the state x, the proposed command u_proposed and the time t and returns the command
it certifies plus a `FilterReport`: `filter(x, u_proposed, t) -> (u_safe, report)`.

The prediction model is the controller's: the nominal one-step RK4 map F(x, u, w) of the symbolic
model plus the learned residual g_theta(x, u) when there is one (new weights through
`set_residual_weights`, no rebuild). What the model may get wrong in one control period is bounded by
`Margins`: `model_error` (per state entry, e.g. the residual's validation error on held-out
transitions) and `disturbance` (per wrench component, the largest external force or torque the
filter is designed for). Their one-step effect on the state,

    d(x, u) = model_error + |dF/dw (x, u)| disturbance,

is what each filter backs off its constraints by (docs/SAFETY.md).

A residual with `previous_input` (g_theta(x, u, u_prev), safe_ctrl_ros.control.residual) keeps
this interface: `next`, `next_w` and `step(x, u, theta)` predict with u_prev = u (the command held
from the step before: the steady-state value, which the filters' certificates use), and
`next_prev` / `step_prev(x, u, u_prev, theta)` take the previous command as the symbol `u_prev`
for a filter that knows it. Without the option both are the same prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import casadi as ca
import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety.constraints import Constraint, ConstraintSet
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray, SymbolicModel, as_vector

FILTERS = ("none", "cbf", "mpsc")
INTERVENTION_TOL = 1e-9  # an entry of u_safe further than this from u_proposed is an intervention
SLACK_TOL = 1e-6  # a slack above this means a condition could not be met


@dataclass
class Margins:
    """One-step bounds the filter is designed for (all >= 0)."""

    model_error: FloatArray = field(default_factory=lambda: np.zeros(0))  # per state entry
    disturbance: FloatArray = field(default_factory=lambda: np.zeros(WRENCH_SIZE))  # per wrench component

    def resolved(self, nx: int) -> Margins:
        e = np.zeros(nx) if self.model_error.size == 0 else as_vector(self.model_error, nx, "filter model_error")
        w = as_vector(self.disturbance, WRENCH_SIZE, "filter disturbance")
        if np.any(e < 0) or np.any(w < 0):
            raise ConfigError(f"filter margins must be >= 0, got model_error {e.tolist()}, disturbance {w.tolist()}")
        return Margins(e, w)


@dataclass
class FilterReport:
    filter: str
    u_proposed: FloatArray
    u_safe: FloatArray
    intervened: bool
    intervention: float  # |u_safe - u_proposed|_2
    active: list[str]  # constraint rows whose filter condition is tight
    max_slack: float
    infeasible: bool  # nothing was certified at this step; `fallback` says what was applied
    fallback: str
    solve_time_s: float


def make_report(name: str, u_proposed: FloatArray, u_safe: FloatArray, active: list[str], max_slack: float,
                infeasible: bool, fallback: str, solve_time_s: float) -> FilterReport:
    diff = u_safe - u_proposed
    finite = bool(np.all(np.isfinite(diff)))
    return FilterReport(
        filter=name, u_proposed=u_proposed.copy(), u_safe=u_safe.copy(),
        intervened=not finite or bool(np.max(np.abs(diff), initial=0.0) > INTERVENTION_TOL),
        intervention=float(np.linalg.norm(diff)) if finite else float("inf"),
        active=active, max_slack=float(max_slack), infeasible=infeasible, fallback=fallback,
        solve_time_s=solve_time_s,
    )


def constraint_expr(c: Constraint, x: ca.SX, u: ca.SX) -> ca.SX:
    """g(z) (<= 0 when satisfied) as a CasADi expression, one entry per row."""
    z = {"state": x, "input": u, "input_and_state": ca.vertcat(x, u)}[c.variable]
    za = ca.vertcat(*[z[i] for i in c.active_dims])
    if c.kind == "quadratic":
        return za.T @ ca.DM(c.A) @ za - float(c.b[0])
    return ca.DM(c.A) @ za - ca.DM(c.b)


class PredictionModel:
    """x_next = F(x, u, w) + g_theta(x, u): the controller's one-step model, as CasADi symbols."""

    def __init__(self, model: SymbolicModel, dt: float, substeps: int = 1,
                 residual: ResidualSpec | None = None) -> None:
        if residual is not None and (residual.nx, residual.nu) != (model.nx, model.nu):
            raise ConfigError(f"filter residual is for nx={residual.nx}, nu={residual.nu}; "
                              f"{model.name} has {model.nx}, {model.nu}")
        if not (np.isfinite(dt) and dt > 0):
            raise ConfigError(f"filter dt must be a positive number of seconds, got {dt}")
        self.model, self.dt, self.residual = model, float(dt), residual
        self.nx, self.nu = model.nx, model.nu
        self.theta: FloatArray = np.zeros(residual.num_params if residual else 0)
        self.x = ca.SX.sym("x", self.nx)
        self.u = ca.SX.sym("u", self.nu)
        self.w = ca.SX.sym("w", WRENCH_SIZE)
        self.th = ca.SX.sym("theta", self.theta.size)
        self.u_prev = ca.SX.sym("u_prev", self.nu)
        rk4 = model.rk4_function(dt, substeps)
        nxt = rk4(self.x, self.u, self.w)
        prev = residual is not None and residual.previous_input
        if residual is not None:
            nxt = nxt + residual.symbolic(self.x, self.u, self.th, *([self.u_prev] if prev else []))
        zero_w = ca.DM.zeros(WRENCH_SIZE)
        # With the previous command as its own symbol (docstring); the same as `next` without the option.
        self.next_prev = ca.substitute(nxt, self.w, zero_w)
        self.step_prev = ca.Function("filter_step_prev", [self.x, self.u, self.u_prev, self.th], [self.next_prev])
        if prev:
            nxt = ca.substitute(nxt, self.u_prev, self.u)  # the interface below: u_prev = u
        self.next_w = nxt  # with the wrench symbol
        self.next = ca.substitute(nxt, self.w, zero_w)
        self.step = ca.Function("filter_step", [self.x, self.u, self.th], [self.next])
        # One-step effect of the wrench bound: |dF/dw| w_max (at w = 0).
        self.w_sens = ca.substitute(ca.jacobian(nxt, self.w), self.w, ca.DM.zeros(WRENCH_SIZE))
        self.xdot = model.symbolic(self.x, self.u)  # continuous nominal dynamics (relative degree)

    def set_residual_weights(self, theta: ArrayLike) -> None:
        if self.residual is None:
            raise ConfigError("this filter's model has no residual")
        self.theta = as_vector(theta, self.residual.num_params, "residual weights")


def split_constraints(cons: ConstraintSet, nu: int, u_low: FloatArray, u_high: FloatArray
                      ) -> tuple[list[Constraint], FloatArray, FloatArray]:
    """Bounded input constraints tighten the input bounds; every other constraint stays a row."""
    lo, hi = u_low.copy(), u_high.copy()
    rows = []
    for c in cons.constraints:
        if c.variable == "input" and c.kind == "bounded":
            n = len(c.active_dims)
            lo[c.active_dims] = np.maximum(lo[c.active_dims], -c.b[:n])
            hi[c.active_dims] = np.minimum(hi[c.active_dims], c.b[n:])
        else:
            rows.append(c)
    if np.any(lo > hi):
        raise ConfigError(f"the input constraints leave no input inside the model's bounds (low {lo}, high {hi})")
    return rows, lo, hi


def check_inputs(nx: int, nu: int, x: ArrayLike, u: ArrayLike) -> tuple[FloatArray | None, FloatArray, str]:
    """(x or None if unusable, u as a float vector (NaN-filled if unusable), problem or "")."""
    xv = np.asarray(x, dtype=np.float64).reshape(-1)
    uv = np.asarray(u, dtype=np.float64).reshape(-1)
    if uv.size != nu:
        return None, np.full(nu, np.nan), f"proposed command has {uv.size} entries, expected {nu}"
    if xv.size != nx or not np.all(np.isfinite(xv)):
        return None, uv, "non-finite or wrong-size state"
    if not np.all(np.isfinite(uv)):
        return xv, uv, "non-finite proposed command"
    return xv, uv, ""
