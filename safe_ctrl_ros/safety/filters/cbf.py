"""CBF-QP safety filter: the input closest to the proposed one that keeps every barrier decreasing slowly.

For each state constraint row g_i(x) <= 0, h_i = -g_i is the safe-set function. Its relative degree
with respect to u is read off the nominal continuous dynamics symbolically: if dh_i/dt = grad h_i f(x, u)
depends on u it is one (rates), otherwise two (positions and angles), and then the barrier is the
high-order (exponential) CBF

    B_i(x) = dh_i/dt (x) + alpha h_i(x)          (relative degree two; B_i = h_i for degree one)

B_i >= 0 keeps dh_i/dt >= -alpha h_i, so h_i decays at most exponentially and stays >= 0. The filter
imposes the discrete-time CBF condition on the one-step prediction x+(u) = F(x, u) + g_theta(x, u),
linearized in u at the proposal, backed off by the margin that covers the model error and the
disturbance bound (base.Margins):

    B_i(x+(u_p)) + dB_i/du (u - u_p) - |grad B_i(x+)| d(x, u_p) + s_i >= (1 - gamma) B_i(x)

and solves  min |u - u_p|_R^2 + rho1 sum s + rho2 |s|^2  s.t. those rows, s >= 0 and the input
bounds, with qpOASES (one CasADi function call: linearization and QP). Input and input-and-state
constraints are rows of relative degree zero, h_i(x, u) >= 0 linearized in u. A slack above
SLACK_TOL means a condition could not be met: the step is reported infeasible and the least-violating
input is applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import casadi as ca
import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.control.lqr import _weight_matrix
from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety.constraints import ConstraintSet
from safe_ctrl_ros.safety.filters.base import (
    SLACK_TOL,
    FilterReport,
    Margins,
    PredictionModel,
    check_inputs,
    constraint_expr,
    make_report,
    split_constraints,
)
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray, SymbolicModel


@dataclass
class CbfConfig:
    gamma: float = 0.5  # discrete CBF rate in (0, 1]: B(x+) >= (1 - gamma) B(x)
    alpha: float = 5.0  # 1/s: B = dh/dt + alpha h for relative degree two
    R: Any = 1.0  # weight on u - u_p, on inputs scaled by half their range
    slack_l1: float = 1e4
    slack_l2: float = 1e4
    active_tol: float = 1e-7  # a row within this of its bound is active

    def validate(self) -> None:
        if not (np.isfinite(self.gamma) and 0 < self.gamma <= 1):
            raise ConfigError(f"cbf gamma must be in (0, 1], got {self.gamma}")
        if not (np.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"cbf alpha must be > 0 (1/s), got {self.alpha}")
        if not (self.slack_l1 >= 0 and self.slack_l2 > 0):
            raise ConfigError("cbf slack_l1 must be >= 0 and slack_l2 > 0")


class CbfFilter:
    name = "cbf"

    def __init__(self, model: SymbolicModel, dt: float, constraints: ConstraintSet, config: CbfConfig | None = None,
                 margins: Margins | None = None, residual: ResidualSpec | None = None, substeps: int = 1) -> None:
        self.cfg = cfg = config or CbfConfig()
        cfg.validate()
        self.pm = pm = PredictionModel(model, dt, substeps, residual)
        self.margins = (margins or Margins()).resolved(model.nx)
        self.nx, self.nu = model.nx, model.nu
        rows, self.u_low, self.u_high = split_constraints(constraints, model.nu, *model.input_bounds)
        self.u_eq = model.equilibrium()[1]
        half = np.where(np.isfinite(self.u_high - self.u_low), 0.5 * (self.u_high - self.u_low), 1.0)
        self.R = _weight_matrix(cfg.R, model.nu, "cbf R") / np.outer(half, half)
        x, u = pm.x, pm.u
        barriers: list[ca.SX] = []
        names: list[str] = []
        self.degrees: list[int] = []
        for c in rows:
            h = -constraint_expr(c, x, u)
            for i, name in enumerate(c.row_names()):
                names.append(name)
                if c.variable != "state":
                    barriers.append(h[i])
                    self.degrees.append(0)
                    continue
                lf = ca.jacobian(h[i], x) @ pm.xdot
                if ca.depends_on(lf, u):
                    barriers.append(h[i])
                    self.degrees.append(1)
                else:
                    barriers.append(ca.substitute(lf, u, ca.DM(self.u_eq)) + cfg.alpha * h[i])
                    self.degrees.append(2)
        self.row_names = names
        self.m = len(barriers)
        self._build(barriers)
        self.reset()

    def _build(self, barriers: list[ca.SX]) -> None:
        pm, cfg, nu, m = self.pm, self.cfg, self.nu, self.m
        x, u, th = pm.x, pm.u, pm.th
        e = ca.SX.sym("e", self.nx)
        wmax = ca.SX.sym("wmax", WRENCH_SIZE)
        xn = pm.next
        d = e + ca.fabs(pm.w_sens) @ wmax
        jx = ca.jacobian(xn, u)
        a_rows, lba = [], []
        bx = ca.vertcat(*barriers) if m else ca.SX(0, 1)
        for i, b in enumerate(barriers):
            if self.degrees[i] == 0:  # h(x, u) >= 0, linearized in u at u_p
                ju = ca.jacobian(b, u)
                a_rows.append(ju)
                lba.append(-b + ju @ u)
                continue
            b_fun = ca.Function("b", [x], [b])
            gb = ca.substitute(ca.jacobian(b, x), x, xn)
            ju = gb @ jx
            a_rows.append(ju)
            margin = ca.fabs(gb) @ d
            lba.append((1 - cfg.gamma) * b_fun(x) - b_fun(xn) + ju @ u + margin)
        amat = ca.vertcat(*a_rows) if m else ca.SX(0, nu)
        lin = ca.Function("cbf_lin", [x, u, th, e, wmax], [amat, ca.vertcat(*lba) if m else ca.SX(0, 1)], {"cse": True})
        self._barrier = ca.Function("cbf_barriers", [x], [ca.substitute(bx, u, ca.DM(self.u_eq))])
        nz = nu + m
        h = np.zeros((nz, nz))
        h[:nu, :nu] = 2 * self.R
        h[nu:, nu:] = 2 * cfg.slack_l2 * np.eye(m)
        self._h = ca.DM(h)
        a_sp = ca.Sparsity.dense(m, nz)
        qp = ca.conic("cbf_qp", "daqp", {"h": self._h.sparsity(), "a": a_sp},
                      {"error_on_fail": False})
        xs, ups, ths = ca.MX.sym("x", self.nx), ca.MX.sym("up", nu), ca.MX.sym("th", pm.theta.size)
        es, ws = ca.MX.sym("e", self.nx), ca.MX.sym("w", WRENCH_SIZE)
        am, lb = lin(xs, ups, ths, es, ws)
        a_full = ca.horzcat(am, ca.MX.eye(m)) if m else ca.MX(0, nz)
        g = ca.vertcat(-2 * ca.DM(self.R) @ ups, cfg.slack_l1 * ca.DM.ones(m))
        lbx = ca.vertcat(ca.DM(self.u_low), ca.DM.zeros(m))
        ubx = ca.vertcat(ca.DM(self.u_high), ca.DM.inf(m))
        sol = qp(h=self._h, g=g, a=a_full, lba=lb, uba=ca.DM.inf(m), lbx=lbx, ubx=ubx)
        z = sol["x"]
        # The rows at the proposal itself (s = 0): all >= 0 means it passes unchanged, bit for bit.
        self._solve = ca.Function("cbf", [xs, ups, ths, es, ws], [z, a_full @ z - lb, am @ ups - lb])

    def reset(self) -> None:
        self.steps = self.interventions = self.infeasible_steps = 0

    def set_residual_weights(self, theta: ArrayLike) -> None:
        self.pm.set_residual_weights(theta)

    def barriers(self, x: ArrayLike) -> FloatArray:
        """B_i(x) of every row (>= 0 inside the filter's safe set)."""
        return np.asarray(self._barrier(np.asarray(x, dtype=np.float64)), dtype=np.float64).reshape(-1)

    def filter(self, x: ArrayLike, u_proposed: ArrayLike, t: float) -> tuple[FloatArray, FilterReport]:
        start = time.perf_counter()
        xv, up, problem = check_inputs(self.nx, self.nu, x, u_proposed)
        self.steps += 1
        if xv is None or problem:
            # Nothing to certify with: the equilibrium input (or, with a usable state, a filtered one).
            if xv is not None:
                u_safe, rep = self._certify(xv, self.u_eq.copy(), start)
                rep.fallback = f"{problem}: equilibrium input filtered"
                rep.infeasible = True
                rep.u_proposed = up.copy()
                return u_safe, self._count(rep)
            u_safe = np.clip(self.u_eq, self.u_low, self.u_high)
            rep = make_report(self.name, up, u_safe, [], 0.0, True, f"{problem}: equilibrium input",
                              time.perf_counter() - start)
            return u_safe, self._count(rep)
        u_safe, rep = self._certify(xv, up, start)
        return u_safe, self._count(rep)

    def _count(self, rep: FilterReport) -> FilterReport:
        self.interventions += rep.intervened
        self.infeasible_steps += rep.infeasible
        return rep

    def _certify(self, x: FloatArray, up: FloatArray, start: float) -> tuple[FloatArray, FilterReport]:
        nu = self.nu
        try:
            z_dm, res_dm, at_dm = self._solve(x, up, self.pm.theta, self.margins.model_error,
                                              self.margins.disturbance)
            z = np.asarray(z_dm, dtype=np.float64).reshape(-1)
            res = np.asarray(res_dm, dtype=np.float64).reshape(-1)
            at_proposal = np.asarray(at_dm, dtype=np.float64).reshape(-1)
            ok = bool(np.all(np.isfinite(z)))
        except RuntimeError:
            z, res, ok = np.full(nu + self.m, np.nan), np.zeros(self.m), False
            at_proposal = np.full(self.m, np.nan)
        inside = bool(np.all(up >= self.u_low) and np.all(up <= self.u_high))
        if inside and bool(np.all(at_proposal >= 0.0)):
            active = [self.row_names[i] for i in np.flatnonzero(at_proposal <= self.cfg.active_tol)]
            return up.copy(), make_report(self.name, up, up, active, 0.0, False, "", time.perf_counter() - start)
        if ok:
            u = np.clip(z[:nu], self.u_low, self.u_high)
            s = z[nu:]
            ok = bool(np.all(res >= -1e-6))
        if not ok:
            u = np.clip(self.u_eq, self.u_low, self.u_high)
            rep = make_report(self.name, up, u, [], float("inf"), True, "QP failed: equilibrium input",
                              time.perf_counter() - start)
            return u, rep
        slack = float(s.max()) if s.size else 0.0
        active = [self.row_names[i] for i in np.flatnonzero(res <= self.cfg.active_tol)]
        infeasible = slack > SLACK_TOL
        rep = make_report(self.name, up, u, active, slack, infeasible,
                          "least-violation input (slack)" if infeasible else "", time.perf_counter() - start)
        return u, rep
