"""Model predictive safety certification (MPSC): certify the proposed input by a backup plan.

At every step the filter looks for the input u_0 closest to the proposed one for which a backup
input sequence u_0 .. u_{N-1} exists whose prediction (the controller's model, base.PredictionModel)
keeps every constraint row, tightened by a tube grown from the one-step margin d, and ends in the
terminal set: the ellipsoid {(x - x_s)' P (x - x_s) <= c} of the LQR around the steady state x_s
(the equilibrium, moved to the task reference's position at t + N dt when a task is given). P is
the discrete Riccati solution of the linearization at x_s, c the largest level whose ellipsoid keeps
the LQR input u_eq - K (x - x_s) inside the input bounds and the ellipsoid inside the tightened
linear/bounded rows, times `terminal_scale`:

    min  |u_0 - u_p|_R^2 + r_b sum_{k>=1} |u_k - u_bar_k|^2 + rho1 1's + rho2 |s|^2
    s.t. x_0 = x,  x_{k+1} = F(x_k, u_k) + g_theta(x_k, u_k),  u_low <= u_k <= u_high,
         g_i(x_k) + t_i(k) + backoff <= s_i,  s_i >= 0  (k = 1..N-1),   |L (x_N - x_s)|_inf <= 0.99 sqrt(c / nx)

(P = L'L: a box inside the terminal ellipsoid), with t_i(k) = sum_{j<k} |G_i A_cl^j| d the tube of
the LQR-stabilized error (A_cl = A - B K at the equilibrium, G the rows' state gradient) and u_bar the
warm start (the last plan shifted; the terminal LQR law rolled out at the start). Solved by one
real-time iteration: the condensed (single-shooting) Gauss-Newton QP at u_bar, dense, with DAQP, in
one CasADi call. The QP's u sequence is then certified on the nonlinear model:
rolled out from x, every tightened row must hold at k = 1..N-1 and x_N must lie in the terminal set.
If it does not (or the QP failed), the step is infeasible and the standard MPSC fallback applies: the
next input of the last certified backup sequence with the tube's feedback, u_j - K (x - x_j), and
once that is used up the terminal LQR law.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import casadi as ca
import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from safe_ctrl_ros.control.lqr import _weight_matrix
from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety.constraints import ConstraintSet
from safe_ctrl_ros.safety.filters.base import (
    FilterReport,
    Margins,
    PredictionModel,
    check_inputs,
    constraint_expr,
    make_report,
    split_constraints,
)
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray, SymbolicModel
from safe_ctrl_ros.tasks import Task

SNAP = 1e-5  # a first input this close to the proposal (relative to half the input range) is the proposal
REGULARIZATION = 1e-8  # on the whole input sequence: keeps the QP strictly convex


@dataclass
class MpscConfig:
    horizon: int = 20
    R: Any = 1.0  # weight on u_0 - u_p, on inputs scaled by half their range
    backup_weight: float = 1e-4  # r_b: the rest of the backup stays near the warm start (the last plan)
    Q_lqr: Any = 1.0  # terminal LQR weights
    R_lqr: Any = 1.0
    terminal_scale: float = 0.5  # fraction of the largest admissible LQR ellipsoid used as terminal set
    slack_l1: float = 1e4
    slack_l2: float = 1e4
    backoff: float = 1e-4  # extra tightening in the QP, so the certification's check holds despite linearization
    iterations: int = 1  # Gauss-Newton steps per call (1 = real-time iteration)
    # Where x_s's positions are: "current" (the state's own: the backup only has to stop), or
    # "reference" (the task's reference at t + N dt). Every position is an equilibrium of these systems.
    terminal_position: str = "current"

    def validate(self) -> None:
        if self.horizon < 2:
            raise ConfigError(f"mpsc horizon must be >= 2, got {self.horizon}")
        if not (np.isfinite(self.terminal_scale) and 0 < self.terminal_scale <= 1):
            raise ConfigError(f"mpsc terminal_scale must be in (0, 1], got {self.terminal_scale}")
        if not (self.backup_weight >= 0 and self.slack_l1 >= 0 and self.slack_l2 > 0 and self.backoff >= 0):
            raise ConfigError("mpsc backup_weight, slack_l1 and backoff must be >= 0, slack_l2 > 0")
        if self.terminal_position not in ("current", "reference"):
            raise ConfigError(f"mpsc terminal_position must be 'current' or 'reference', "
                              f"got '{self.terminal_position}'")
        if self.iterations < 1:
            raise ConfigError(f"mpsc iterations must be >= 1, got {self.iterations}")


class MpscFilter:
    name = "mpsc"

    def __init__(self, model: SymbolicModel, dt: float, constraints: ConstraintSet, config: MpscConfig | None = None,
                 margins: Margins | None = None, residual: ResidualSpec | None = None, substeps: int = 1,
                 task: Task | None = None) -> None:
        self.cfg = cfg = config or MpscConfig()
        cfg.validate()
        self.pm = PredictionModel(model, dt, substeps, residual)
        self.model, self.task, self.dt = model, task, float(dt)
        self.margins = (margins or Margins()).resolved(model.nx)
        self.nx, self.nu = model.nx, model.nu
        rows, self.u_low, self.u_high = split_constraints(constraints, model.nu, *model.input_bounds)
        self.x_eq, self.u_eq = model.equilibrium()
        half = np.where(np.isfinite(self.u_high - self.u_low), 0.5 * (self.u_high - self.u_low), 1.0)
        self.R = _weight_matrix(cfg.R, model.nu, "mpsc R") / np.outer(half, half)
        self._half = half
        self.soft = [c for c in rows if c.variable != "input"]
        self.hard = [c for c in rows if c.variable == "input"]
        self.row_names = [nm for c in self.soft for nm in c.row_names()]
        self.ns = sum(c.num_rows for c in self.soft)
        self.nh = sum(c.num_rows for c in self.hard)
        self._lqr(cfg)
        self._build()
        self.reset()

    # --- terminal set ---------------------------------------------------------------------------
    def _lqr(self, cfg: MpscConfig) -> None:
        a, b = self.model.linearize(self.x_eq, self.u_eq)
        a_d = scipy.linalg.expm(np.block([[a, b], [np.zeros((self.nu, self.nx + self.nu))]]) * self.dt)
        ad, bd = a_d[: self.nx, : self.nx], a_d[: self.nx, self.nx :]
        q = _weight_matrix(cfg.Q_lqr, self.nx, "mpsc Q_lqr")
        r = _weight_matrix(cfg.R_lqr, self.nu, "mpsc R_lqr")
        p = scipy.linalg.solve_discrete_are(ad, bd, q, r)
        self.P = 0.5 * (p + p.T)
        self.K = np.linalg.solve(r + bd.T @ self.P @ bd, bd.T @ self.P @ ad)
        self.P_inv = np.linalg.inv(self.P)
        self.A_cl = ad - bd @ self.K
        # Linear rows of the state constraints (for the terminal level): a'x <= b.
        lin_a, lin_b = [], []
        for c in self.soft:
            if c.variable == "state" and c.kind != "quadratic":
                full = np.zeros((c.A.shape[0], self.nx))
                full[:, c.active_dims] = c.A
                lin_a.append(full)
                lin_b.append(c.b)
        self._lin_a = np.vstack(lin_a) if lin_a else np.zeros((0, self.nx))
        self._lin_b = np.concatenate(lin_b) if lin_b else np.zeros(0)
        self._lin_rows = [i for i, c_rows in enumerate(self._soft_linear_mask()) if c_rows]

    def _soft_linear_mask(self) -> list[bool]:
        return [c.variable == "state" and c.kind != "quadratic" for c in self.soft for _ in range(c.num_rows)]

    def steady_state(self, t: float, x: FloatArray) -> FloatArray:
        """x_s: the equilibrium, at the current position or the task reference's at t + N dt."""
        xs = self.x_eq.copy()
        pos = list(self.model.position_indices)
        if not pos:
            return xs
        if self.cfg.terminal_position == "current":
            xs[pos] = x[pos]
        elif self.task is not None:
            xs[pos] = self.task.reference(t + self.cfg.horizon * self.dt)[0][0][pos]
        return xs

    def _tube(self, soft_jac: ca.Function) -> None:
        """Tube of the LQR-stabilized error e_{k+1} = A_cl e_k + d: rows tightened at stage k by
        sum_{j<k} |G A_cl^j| d, G the rows' state gradient at the equilibrium."""
        n, ns = self.cfg.horizon, self.ns
        gmat = np.asarray(soft_jac(self.x_eq, self.u_eq), dtype=np.float64).reshape(ns, self.nx)
        acc = np.zeros((ns, self.nx))
        power = np.eye(self.nx)
        blocks = []
        for _ in range(n + 1):
            blocks.append(acc.copy())
            acc = acc + np.abs(gmat @ power)
            power = self.A_cl @ power
        self._tube_k = np.vstack(blocks[:n])  # (N ns, nx): stages 0 .. N-1
        self._tube_n = blocks[n]  # (ns, nx): stage N (the terminal set)

    def _one_step(self, x: FloatArray, u: FloatArray) -> FloatArray:
        d = self._d(x, u, self.pm.theta, self.margins.model_error, self.margins.disturbance)
        return np.asarray(d, dtype=np.float64).reshape(-1)

    def tightening(self, x: FloatArray, u: FloatArray) -> FloatArray:
        """Per stage k = 0..N-1 and row: how far the row is tightened (stage-major)."""
        out: FloatArray = self._tube_k @ self._one_step(x, u)
        return out

    def terminal_level(self, xs: FloatArray, tight: FloatArray) -> float:
        """Largest c with u_eq - K dx inside the input bounds and the ellipsoid inside the tightened rows."""
        levels = []
        kpk = np.einsum("ij,jk,ik->i", self.K, self.P_inv, self.K)
        for j in range(self.nu):
            room = min(self.u_high[j] - self.u_eq[j], self.u_eq[j] - self.u_low[j])
            if np.isfinite(room) and kpk[j] > 0:
                levels.append(max(room, 0.0) ** 2 / kpk[j])
        if self._lin_a.shape[0]:
            room = self._lin_b - self._lin_a @ xs - tight[self._lin_rows] - self.cfg.backoff
            apa = np.einsum("ij,jk,ik->i", self._lin_a, self.P_inv, self._lin_a)
            levels.extend((np.maximum(room, 0.0) ** 2 / apa)[apa > 0].tolist())
        return self.cfg.terminal_scale * (min(levels) if levels else 1.0)

    # --- problem --------------------------------------------------------------------------------
    def _build(self) -> None:
        """One CasADi function (u_bar, p) -> (u, [worst tightened row, terminal, slack]): the
        condensed Gauss-Newton QP at the input sequence u_bar, solved with DAQP, then the
        certification rollout of its solution on the nonlinear model."""
        cfg, pm = self.cfg, self.pm
        nx, nu, ns, nh, n = self.nx, self.nu, self.ns, self.nh, cfg.horizon
        xs_, us_ = pm.x, pm.u
        soft_expr = ca.vertcat(*[constraint_expr(c, xs_, us_) for c in self.soft]) if ns else ca.SX(0, 1)
        hard_expr = ca.vertcat(*[constraint_expr(c, xs_, us_) for c in self.hard]) if nh else ca.SX(0, 1)
        soft_fn = ca.Function("soft", [xs_, us_], [soft_expr])
        hard_fn = ca.Function("hard", [xs_, us_], [hard_expr])
        # The one-step bound d at (x, u_p); the tube spreads it over the horizon.
        e, wmax = ca.SX.sym("e", nx), ca.SX.sym("wmax", WRENCH_SIZE)
        self._d = ca.Function("d", [xs_, us_, pm.th, e, wmax], [e + ca.fabs(pm.w_sens) @ wmax])
        self._tube(ca.Function("soft_jac", [xs_, us_], [ca.jacobian(soft_expr, xs_)]))
        self._rollout = ca.Function("mpsc_step", [xs_, us_, pm.th], [pm.step(xs_, us_, pm.th)])

        useq = ca.SX.sym("u", n * nu)
        p_x0, p_up, p_xs = ca.SX.sym("x0", nx), ca.SX.sym("up", nu), ca.SX.sym("xs", nx)
        p_c, p_tight, th = ca.SX.sym("c"), ca.SX.sym("tight", ns * n), ca.SX.sym("th", pm.theta.size)
        pv = ca.vertcat(p_x0, p_up, p_xs, p_c, p_tight, th)
        xk = p_x0
        soft_rows, hard_rows = [], []
        for k in range(n):
            uk = useq[k * nu : (k + 1) * nu]
            if k > 0 and ns:
                soft_rows.append(soft_fn(xk, uk) + p_tight[k * ns : (k + 1) * ns])
            if nh:
                hard_rows.append(hard_fn(xk, uk))
            xk = pm.step(xk, uk, th)
        en = xk - p_xs
        term = en.T @ ca.DM(self.P) @ en - p_c
        # In the QP the terminal ellipsoid is replaced by the box |L (x_N - x_s)|_inf <= sqrt(c / nx)
        # (P = L'L) inside it: linear in x_N, so its linearization is never vacuous (the ellipsoid's is
        # at its centre); the certification checks the ellipsoid itself.
        zn = ca.DM(np.linalg.cholesky(self.P).T) @ en
        half = 0.99 * ca.sqrt(ca.fmax(p_c, 0) / nx)
        box = ca.vertcat(zn - half, -zn - half)
        soft_all = ca.vertcat(*soft_rows) if soft_rows else ca.SX(0, 1)
        rows = ca.vertcat(soft_all, *hard_rows, box)
        n_soft, n_rows = soft_all.shape[0], rows.shape[0]
        lin = ca.Function("mpsc_lin", [useq, pv], [rows, ca.jacobian(rows, useq)], {"cse": True})
        cert = ca.Function("mpsc_cert", [useq, pv], [ca.vertcat(soft_all, *hard_rows, term)], {"cse": True})
        # QP in z = [u (N nu); s (ns)]: one slack per constraint row, shared by the stages.
        nz = n * nu + ns
        hdiag = np.zeros((nz, nz))
        hdiag[:nu, :nu] = 2 * self.R
        for k in range(1, n):
            hdiag[k * nu : (k + 1) * nu, k * nu : (k + 1) * nu] = 2 * cfg.backup_weight * np.diag(self._half**-2.0)
        hdiag[n * nu :, n * nu :] = 2 * cfg.slack_l2 * np.eye(ns)
        hdiag[: n * nu, : n * nu] += 2 * REGULARIZATION * np.eye(n * nu)
        h = ca.DM(hdiag)
        slack_map = np.zeros((n_rows, ns))
        for k in range(n_soft // max(ns, 1)):
            slack_map[k * ns : (k + 1) * ns, :] = -np.eye(ns)
        qp = ca.conic("mpsc_qp", "daqp", {"h": h.sparsity(), "a": ca.Sparsity.dense(n_rows, nz)},
                      {"error_on_fail": False})
        ubar, p = ca.MX.sym("ubar", n * nu), ca.MX.sym("p", pv.shape[0])
        backoff = np.r_[np.full(n_soft, cfg.backoff), np.zeros(n_rows - n_soft)]
        useq_k: Any = ubar
        anchor = ubar  # the rest of the backup stays near the warm start (the previous plan)
        up_m = p[nx : nx + nu]
        for _ in range(cfg.iterations):
            g0, jac = lin(useq_k, p)
            amat = ca.horzcat(jac, ca.DM(slack_map))
            uba = -g0 - ca.DM(backoff) + jac @ useq_k
            # The quadratic's target: u_0 = u_p, the rest of the backup = the warm start.
            target = ca.vertcat(up_m, anchor[nu:])
            grad = ca.vertcat(-ca.DM(hdiag[: n * nu, : n * nu]) @ target, cfg.slack_l1 * ca.DM.ones(ns))
            lbx = ca.vertcat(ca.repmat(ca.DM(self.u_low), n, 1), ca.DM.zeros(ns))
            ubx = ca.vertcat(ca.repmat(ca.DM(self.u_high), n, 1), ca.DM.inf(ns))
            sol = qp(h=h, g=grad, a=amat, lba=-ca.DM.inf(n_rows), uba=uba, lbx=lbx, ubx=ubx)
            useq_k = sol["x"][: n * nu]
            slack = ca.mmax(sol["x"][n * nu :]) if ns else ca.MX(0)
        rows_cert = cert(useq_k, p)
        x_pred = [p[:nx]]
        thm = p[pv.shape[0] - pm.theta.size :] if pm.theta.size else ca.MX(0, 1)
        for k in range(n):
            x_pred.append(pm.step(x_pred[-1], useq_k[k * nu : (k + 1) * nu], thm))
        n_cert = n_rows - 2 * nx + 1
        worst = ca.mmax(rows_cert[: n_cert - 1]) if n_cert > 1 else ca.MX(-np.inf)
        self._solve = ca.Function("mpsc", [ubar, p], [useq_k, ca.vertcat(worst, rows_cert[n_cert - 1], slack),
                                                       ca.horzcat(*x_pred)])

    # --- runtime --------------------------------------------------------------------------------
    def reset(self) -> None:
        self.steps = self.interventions = self.infeasible_steps = 0
        self._plan: FloatArray | None = None  # (N, nu): warm start for the next call
        self._backup: FloatArray | None = None  # (N-1, nu): the certified inputs for the next steps
        self._backup_xs = self.x_eq.copy()
        self._used = 0

    def set_residual_weights(self, theta: ArrayLike) -> None:
        self.pm.set_residual_weights(theta)

    def _lqr_law(self, x: FloatArray, xs: FloatArray) -> FloatArray:
        u: FloatArray = np.clip(self.u_eq - self.K @ (x - xs), self.u_low, self.u_high)
        return u

    def _guess(self, x: FloatArray, xs: FloatArray) -> FloatArray:
        """Warm start: the previous plan shifted, else the terminal LQR law rolled out."""
        if self._plan is not None:
            return np.vstack([self._plan[1:], self._plan[-1:]])
        plan = np.zeros((self.cfg.horizon, self.nu))
        xk = x.copy()
        for k in range(self.cfg.horizon):
            plan[k] = self._lqr_law(xk, xs)
            xk = np.asarray(self._rollout(xk, plan[k], self.pm.theta), dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(xk)):
                xk = x.copy()
        return plan

    def filter(self, x: ArrayLike, u_proposed: ArrayLike, t: float) -> tuple[FloatArray, FilterReport]:
        start = time.perf_counter()
        self.steps += 1
        xv, up, problem = check_inputs(self.nx, self.nu, x, u_proposed)
        if xv is None:
            return self._fallback(None, up, f"{problem}: ", start)
        up_used = self.u_eq.copy() if problem else up
        n, nu = self.cfg.horizon, self.nu
        xs = self.steady_state(t, xv)
        tight = self.tightening(xv, up_used)
        c = self.terminal_level(xs, self._tube_n @ self._one_step(xv, up_used))
        p = np.concatenate([xv, up_used, xs, [c], tight, self.pm.theta])
        guess = self._guess(xv, xs)
        try:
            u_dm, info_dm, x_dm = self._solve(guess.reshape(-1), p)
            plan = np.asarray(u_dm, dtype=np.float64).reshape(n, nu)
            x_plan = np.asarray(x_dm, dtype=np.float64).T
            worst, term, slack = (float(v) for v in np.asarray(info_dm, dtype=np.float64).reshape(-1))
        except RuntimeError:
            plan, worst, term, slack = np.full((n, nu), np.nan), float("nan"), float("nan"), float("nan")
            x_plan = np.full((n + 1, self.nx), np.nan)
        finite = bool(np.all(np.isfinite(plan)))
        certified = finite and worst <= 0.0 and term <= 0.0
        if not certified:
            why = "QP failed" if not finite else f"backup not certified (constraint {worst:.3g}, terminal {term:.3g})"
            return self._fallback(xv, up, f"{problem + '; ' if problem else ''}{why}: ", start, slack)
        plan = np.clip(plan, self.u_low, self.u_high)
        if not problem and np.all(np.abs(plan[0] - up) <= SNAP * self._half):
            plan[0] = up  # the QP's rounding, not an intervention (certified with backoff to spare)
        u = plan[0].copy()
        self._backup = plan[1:].copy()
        self._backup_x = x_plan[1:n].copy()
        self._backup_xs = xs
        self._used = 0
        self._plan = plan
        active = self._active(xv, u)
        rep = make_report(self.name, up, u, active, max(slack, 0.0), bool(problem),
                          f"{problem}: equilibrium input certified" if problem else "", time.perf_counter() - start)
        self.interventions += rep.intervened
        self.infeasible_steps += rep.infeasible
        return u, rep

    def _active(self, x: FloatArray, u: FloatArray) -> list[str]:
        """Rows the first predicted state x_1 is within 1e-6 of (after tightening)."""
        if not self.ns:
            return []
        x1 = np.asarray(self._rollout(x, u, self.pm.theta), dtype=np.float64).reshape(-1)
        g = np.concatenate([c.values(x1, u) for c in self.soft])
        tight = self.tightening(x, u)[self.ns : 2 * self.ns]
        return [self.row_names[i] for i in np.flatnonzero(g + tight + self.cfg.backoff >= -1e-6)]

    def _fallback(self, x: FloatArray | None, up: FloatArray, why: str, start: float,
                  slack: float = 0.0) -> tuple[FloatArray, FilterReport]:
        if self._backup is not None and x is not None and self._used < self._backup.shape[0]:
            # The backup with the tube's ancillary feedback: u_j - K (x - x_j), so the error stays in
            # the tube the tightening was computed for.
            j = self._used
            u = np.clip(self._backup[j] - self.K @ (x - self._backup_x[j]), self.u_low, self.u_high)
            self._used += 1
            self._plan = np.vstack([self._backup[j:], np.repeat(self._backup[-1:], j + 1, axis=0)])
            what = f"{why}certified backup input {self._used} of {self._backup.shape[0]}"
        elif x is not None:
            u = self._lqr_law(x, self._backup_xs)
            self._plan = None
            what = f"{why}terminal LQR law"
        else:
            u = np.clip(self.u_eq, self.u_low, self.u_high)
            what = f"{why}equilibrium input"
        rep = make_report(self.name, up, u, [], slack if np.isfinite(slack) else float("inf"), True, what,
                          time.perf_counter() - start)
        self.interventions += rep.intervened
        self.infeasible_steps += 1
        return u, rep
