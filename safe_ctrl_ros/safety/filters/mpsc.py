"""Model predictive safety certification (MPSC): certify the proposed input by a backup plan.

At every step the filter looks for the input u_0 closest to the proposed one for which a backup
input sequence u_0 .. u_{N-1} exists whose prediction (the controller's model, base.PredictionModel)
keeps every constraint row, tightened by a tube grown from the one-step margin d, and ends in the
terminal set: the ellipsoid {(x - x_s)' P (x - x_s) <= c} of the LQR around a steady state x_s of
the prediction model.

The steady state is the model's own, the residual included: (x_s, u_s) solves
x_s = F(x_s, u_s) + g_theta(x_s, u_s) (least squares over u and the non-position entries of x, the
positions held; recomputed with every new set of residual weights; what it leaves unbalanced is added
to d). A, B are the nominal one-step Jacobians at (x_s, u_s) (the MLP's Jacobian at one point couples
axes the rest of its domain does not), P the discrete Riccati solution with Q_lqr, R_lqr, K the LQR
gain, which is also the tube's feedback. Every position is an equilibrium of these systems, so x_s's positions p
are free: with `terminal_position: free` they are variables of the QP, constrained so the ellipsoid
lies inside the tightened position rows; `current` fixes them at the state's positions, `reference`
at the task reference's at t + N dt. c is the largest level whose ellipsoid keeps u_s - K (x - x_s)
inside the input bounds and lies inside the tightened linear rows (for a pair of opposite position
rows, e.g. a lower and an upper altitude, inside the band between them), times `terminal_scale`:

    min  |u_0 - u_p|_R^2 + r_b sum_{k>=1} |u_k - u_bar_k|^2 + rho1 1's + rho2 |s|^2
    s.t. x_0 = x,  x_{k+1} = F(x_k, u_k) + g_theta(x_k, u_k),  u_low <= u_k <= u_high,
         g_i(x_k) + t_i(k) + backoff <= s_i,  s_i >= 0  (k = 1..N-1),
         |L (x_N - x_s(p))|_inf <= 0.99 sqrt(c / nx),   a_i' x_s(p) + sqrt(c a_i' P^-1 a_i) <= b_i - t_i(N)

(P = L'L: a box inside the terminal ellipsoid), with t_i(k) = sum_{j<k} |G_i A_cl^j| d the tube of
the LQR-stabilized error (A_cl = A - B K, G the rows' state gradient) and u_bar the warm start (the
last certified plan shifted and completed by the terminal LQR law at its predicted x_N, else the
terminal LQR law rolled out). The terminal rows share one slack
of their own, so the QP always returns a plan. Solved by one real-time iteration: the condensed
Gauss-Newton QP at u_bar, dense, with DAQP, in one CasADi call: u_bar rolled out on the full model,
the nominal model's and the residual's Jacobians at every stage, condensed by the recursion
S_{k+1} = A_k S_k + [0 B_k 0]. With a residual, linearization and certification are built in MX so
the MLP runs as dense matrix products (its SX expansion, one scalar operation per weight through every
stage, was most of the cost; without one they are SX functions, cheaper still); a
residual linearized once per step (at x, u_p) was cheaper still but wrong far from u_p (the plan's
thrusts are not the proposal's), and the certification then failed. `iterations` > 1 takes more
Gauss-Newton steps only while the plan is not certified. The QP's u sequence is then certified on
the full nonlinear model: rolled out from x, every tightened row must hold at k = 1..N-1 and x_N must lie in the
terminal set. If it does not (or the QP failed), the step is infeasible and the standard MPSC
fallback applies: the next input of the last certified backup sequence with the tube's feedback,
u_j - K (x - x_j), and once that is used up the terminal LQR law about that backup's x_s (before any
plan was certified, about the steady state at the current position).

Offset-free prediction (`offset_free`): every stage adds e_hat = x_k - x_hat_k, the last measured
one-step prediction error (position entries left out), and the steady state moves by its linear
sensitivity to e_hat; the margin is then `model_error` of MpscConfig (how far the error moves from
e_hat within N steps) plus twice the wrench bound's effect (e_hat holds the last wrench). The first
step of an episode, with nothing measured, is not certified. `use_residual: false` plans with the
nominal model (+ e_hat) and ignores residual weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

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
RELAX = 1e9  # added to a terminal position row that does not apply (fixed terminal position)
TERMINAL_POSITIONS = ("free", "current", "reference")
POS_BACKOFF = 1e-4  # m: the terminal position rows' backoff in the QP
EQ_ITERATIONS = 30  # Gauss-Newton steps of the steady-state solve


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
    # Gauss-Newton steps per call at most: the first from the warm start (real-time iteration), more
    # only while the plan is not certified.
    iterations: int = 1
    # Where x_s's positions are: "free" (variables of the QP: any position inside the tightened rows),
    # "current" (the state's own: the backup has to stop and come back), or "reference" (the task's
    # reference at t + N dt). Every position is an equilibrium of these systems.
    terminal_position: str = "free"
    # Offset-free prediction: every stage adds the last measured one-step prediction error
    # e_hat = x_k - x_hat_k (x_hat_k the model's prediction of x_k from x_{k-1} and the applied input);
    # `model_error` must then bound how far the model error moves from e_hat over the horizon.
    offset_free: bool = False
    # false: plan with the nominal model alone (learned residual weights are accepted and ignored)
    use_residual: bool = True
    # With offset_free: how far the one-step model error moves from the last measured one over the
    # horizon, per state entry (nx values, empty = 0); it replaces the filter's `model_error`, which
    # bounds the error itself. Unused without offset_free.
    model_error: Any = ()

    def validate(self) -> None:
        if self.horizon < 2:
            raise ConfigError(f"mpsc horizon must be >= 2, got {self.horizon}")
        if not (np.isfinite(self.terminal_scale) and 0 < self.terminal_scale <= 1):
            raise ConfigError(f"mpsc terminal_scale must be in (0, 1], got {self.terminal_scale}")
        if not (self.backup_weight >= 0 and self.slack_l1 >= 0 and self.slack_l2 > 0 and self.backoff >= 0):
            raise ConfigError("mpsc backup_weight, slack_l1 and backoff must be >= 0, slack_l2 > 0")
        if self.terminal_position not in TERMINAL_POSITIONS:
            raise ConfigError(f"mpsc terminal_position must be one of {TERMINAL_POSITIONS}, "
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
        if not cfg.use_residual:
            residual = None
        self.pm = PredictionModel(model, dt, substeps, residual)
        self.model, self.task, self.dt, self.substeps = model, task, float(dt), int(substeps)
        self.margins = (margins or Margins()).resolved(model.nx)
        if cfg.offset_free:
            own = np.asarray(cfg.model_error, dtype=np.float64).reshape(-1)
            self.margins = Margins(own, self.margins.disturbance).resolved(model.nx)
        self.nx, self.nu = model.nx, model.nu
        rows, self.u_low, self.u_high = split_constraints(constraints, model.nu, *model.input_bounds)
        self.x_eq, self.u_eq = model.equilibrium()
        self.pos = list(model.position_indices)
        self.npos = len(self.pos)
        half = np.where(np.isfinite(self.u_high - self.u_low), 0.5 * (self.u_high - self.u_low), 1.0)
        self.R = _weight_matrix(cfg.R, model.nu, "mpsc R") / np.outer(half, half)
        self._half = half
        self._q = _weight_matrix(cfg.Q_lqr, self.nx, "mpsc Q_lqr")
        self._r = _weight_matrix(cfg.R_lqr, self.nu, "mpsc R_lqr")
        self.soft = [c for c in rows if c.variable != "input"]
        self.hard = [c for c in rows if c.variable == "input"]
        self.row_names = [nm for c in self.soft for nm in c.row_names()]
        self.ns = sum(c.num_rows for c in self.soft)
        self.nh = sum(c.num_rows for c in self.hard)
        self._th = ca.DM(self.pm.theta)  # the weights as CasADi takes them (converting 1500 numbers costs)
        self._linear_rows()
        self._functions()
        self._update_model()
        self._build()
        self.reset()

    # --- the model's steady state, LQR, tube, terminal set ---------------------------------------
    def _linear_rows(self) -> None:
        """The linear rows a'x <= b of the state constraints (for the terminal level), which of them
        involve positions, and for each of those its opposite row (a_j = -a_i), if any."""
        lin_a: list[FloatArray] = []
        lin_b: list[FloatArray] = []
        idx: list[int] = []
        start = 0
        for c in self.soft:
            if c.variable == "state" and c.kind != "quadratic":
                full = np.zeros((c.A.shape[0], self.nx))
                full[:, c.active_dims] = c.A
                lin_a.append(full)
                lin_b.append(c.b)
                idx.extend(range(start, start + c.num_rows))
            start += c.num_rows
        self._lin_a = np.vstack(lin_a) if lin_a else np.zeros((0, self.nx))
        self._lin_b = np.concatenate(lin_b) if lin_b else np.zeros(0)
        self._lin_rows = idx  # their indices among the soft rows
        has_pos = np.any(self._lin_a[:, self.pos] != 0, axis=1) if self.npos else np.zeros(len(idx), dtype=np.bool_)
        self._pos_rows = [i for i in range(len(idx)) if has_pos[i]]
        self._opposite: dict[int, int] = {}
        for i in self._pos_rows:
            for j in self._pos_rows:
                if j != i and np.allclose(self._lin_a[j], -self._lin_a[i]):
                    self._opposite[i] = j
        self._ep = np.zeros((self.nx, self.npos))  # x_s(p) = x_s0 + E p
        self._ep[self.pos, range(self.npos)] = 1.0

    def _functions(self) -> None:
        pm = self.pm
        x, u, th = pm.x, pm.u, pm.th
        soft = ca.vertcat(*[constraint_expr(c, x, u) for c in self.soft]) if self.ns else ca.SX(0, 1)
        self._soft_jac = ca.Function("soft_jac", [x, u], [ca.jacobian(soft, x)])
        nominal = self.model.rk4_function(self.dt, self.substeps)(x, u, ca.DM.zeros(WRENCH_SIZE))
        self._ab = ca.Function("mpsc_ab", [x, u], [ca.jacobian(nominal, x), ca.jacobian(nominal, u)])
        e, wmax = ca.SX.sym("e", self.nx), ca.SX.sym("wmax", WRENCH_SIZE)
        self._d = ca.Function("d", [x, u, e, wmax], [e + ca.fabs(pm.w_sens) @ wmax])
        self._rollout = ca.Function("mpsc_step", [x, u, th], [pm.step(x, u, th)])
        # The one-step map as a function of the unknowns of the steady state: u and x's non-position entries.
        self._free_x = [i for i in range(self.nx) if i not in self.pos]
        z = ca.SX.sym("z", len(self._free_x) + self.nu)
        xz = ca.SX(ca.DM(self.x_eq))
        for k, i in enumerate(self._free_x):
            xz[i] = z[k]
        uz = z[len(self._free_x):]
        res = pm.step(xz, uz, th) - xz
        self._eq_res = ca.Function("eq_res", [z, th], [res, ca.jacobian(res, z)])

    def steady_state_of_model(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(x_s, u_s, imbalance): the prediction model's steady state at x_eq's positions, by damped
        Gauss-Newton from the nominal equilibrium; imbalance = |x_s+ - x_s| it leaves (0 if exact)."""
        nf = len(self._free_x)
        z = np.concatenate([self.x_eq[self._free_x], self.u_eq])
        scale = np.concatenate([np.ones(nf), self._half])
        for _ in range(EQ_ITERATIONS):
            r_dm, j_dm = self._eq_res(z, self._th)
            r = np.asarray(r_dm, dtype=np.float64).reshape(-1)
            jac = np.asarray(j_dm, dtype=np.float64) * scale
            step = np.linalg.lstsq(np.vstack([jac, 1e-6 * np.eye(z.size)]), np.r_[-r, np.zeros(z.size)], rcond=None)[0]
            z = z + scale * step
            z[nf:] = np.clip(z[nf:], self.u_low, self.u_high)
            if np.max(np.abs(step)) < 1e-12:
                break
        xs = self.x_eq.copy()
        xs[self._free_x] = z[:nf]
        us = z[nf:].copy()
        imbalance = np.abs(np.asarray(self._rollout(xs, us, self._th), dtype=np.float64).reshape(-1) - xs)
        if not np.all(np.isfinite(imbalance)):
            raise ConfigError("mpsc: the prediction model has no finite steady state near the nominal equilibrium")
        return xs, us, imbalance

    def _update_model(self) -> None:
        """Steady state, LQR, tube and the one-step imbalance, for the current residual weights."""
        xs, us, imbalance = self.steady_state_of_model()
        a_dm, b_dm = self._ab(xs, us)
        ad, bd = np.asarray(a_dm, dtype=np.float64), np.asarray(b_dm, dtype=np.float64)
        try:
            p = scipy.linalg.solve_discrete_are(ad, bd, self._q, self._r)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ConfigError(f"mpsc: no LQR for the prediction model at its steady state ({exc})") from exc
        self.x_s0, self.u_s, self.imbalance = xs, us, imbalance
        self._us_now = us.copy()  # u_s with the current step's offset-free correction (none yet)
        # Linear sensitivity of the steady state's unknowns (non-position x entries, u) to a constant
        # correction e added to the model: J dz = -e, J = [A - I, B] of the nominal model (as for A, B).
        jac = np.hstack([(ad - np.eye(self.nx))[:, self._free_x], bd])
        self._ss_sens = -np.linalg.pinv(jac)
        self.P = 0.5 * (p + p.T)
        self.K = np.linalg.solve(self._r + bd.T @ self.P @ bd, bd.T @ self.P @ ad)
        self.P_inv = np.linalg.inv(self.P)
        self.L = np.linalg.cholesky(self.P).T  # P = L'L
        self.A_cl = ad - bd @ self.K
        self._apa = np.einsum("ij,jk,ik->i", self._lin_a, self.P_inv, self._lin_a)
        self._kpk = np.einsum("ij,jk,ik->i", self.K, self.P_inv, self.K)
        self._tube()

    def _tube(self) -> None:
        """Tube of the LQR-stabilized error e_{k+1} = A_cl e_k + d: rows tightened at stage k by
        sum_{j<k} |G A_cl^j| d, G the rows' state gradient at the steady state."""
        n, ns = self.cfg.horizon, self.ns
        gmat = np.asarray(self._soft_jac(self.x_s0, self.u_s), dtype=np.float64).reshape(ns, self.nx)
        acc = np.zeros((ns, self.nx))
        power = np.eye(self.nx)
        blocks = []
        for _ in range(n + 1):
            blocks.append(acc.copy())
            acc = acc + np.abs(gmat @ power)
            power = self.A_cl @ power
        self._tube_k = np.vstack(blocks[:n])  # (N ns, nx): stages 0 .. N-1
        self._tube_n = blocks[n]  # (ns, nx): stage N (the terminal set)

    def design(self) -> dict[str, Any]:
        """What the filter is built around, at its steady state: u_s (and the nominal u_eq), x_s,
        the one-step margin d there, each row's tube at the horizon t(N) and the terminal level c."""
        d = self.one_step_margin(self.x_s0, self.u_s)
        tube_n = self._tube_n @ d
        return {"u_s": self.u_s.tolist(), "u_nominal": self.u_eq.tolist(), "x_s": self.x_s0.tolist(),
                "d": d.tolist(), "rows": list(self.row_names), "tube_N": tube_n.tolist(),
                "terminal_level": self.terminal_level(self.x_s0, tube_n)}

    def one_step_margin(self, x: FloatArray, u: FloatArray) -> FloatArray:
        """d(x, u): model error + wrench effect + what the steady state leaves unbalanced."""
        # With the offset-free correction e_hat holds the last step's wrench effect too: the wrench's
        # share of the error is w_{k+j} - w_{k-1}, up to twice the bound.
        wmax = self.margins.disturbance * (2.0 if self.cfg.offset_free else 1.0)
        d = self._d(x, u, self.margins.model_error, wmax)
        out: FloatArray = np.asarray(d, dtype=np.float64).reshape(-1) + self.imbalance
        return out

    def tightening(self, x: FloatArray, u: FloatArray) -> FloatArray:
        """Per stage k = 0..N-1 and row: how far the row is tightened (stage-major)."""
        out: FloatArray = self._tube_k @ self.one_step_margin(x, u)
        return out

    def steady_state(self, t: float, x: FloatArray) -> FloatArray:
        """x_s with the positions of the state (`free`, `current`) or of the task reference at t + N dt."""
        xs = self.x_s0.copy()
        if not self.pos:
            return xs
        if self.cfg.terminal_position in ("free", "current"):
            xs[self.pos] = x[self.pos]
        elif self.task is not None:
            xs[self.pos] = self.task.reference(t + self.cfg.horizon * self.dt)[0][0][self.pos]
        return xs

    def _at_position(self, x: FloatArray) -> FloatArray:
        xs = self.x_s0.copy()
        xs[self.pos] = x[self.pos]
        return xs

    def terminal_level(self, xs: FloatArray, tight: FloatArray, us: FloatArray | None = None) -> float:
        """Largest c with u_s - K dx inside the input bounds and the ellipsoid inside the tightened
        linear rows, times terminal_scale. With free positions a pair of opposite position rows
        limits c by the width of the band between them, a lone position row by its room at xs."""
        levels = []
        us = self.u_s if us is None else us
        for j in range(self.nu):
            room = min(self.u_high[j] - us[j], us[j] - self.u_low[j])
            if np.isfinite(room) and self._kpk[j] > 0:
                levels.append(max(room, 0.0) ** 2 / self._kpk[j])
        if self._lin_a.shape[0]:
            room = self._lin_b - self._lin_a @ xs - tight[self._lin_rows] - self.cfg.backoff
            if self.cfg.terminal_position == "free":
                for i, j in self._opposite.items():
                    width = self._lin_b[i] + self._lin_b[j] - tight[self._lin_rows[i]] - tight[self._lin_rows[j]]
                    room[i] = 0.5 * (width - 2 * self.cfg.backoff)
            ok = self._apa > 0
            levels.extend((np.maximum(room[ok], 0.0) ** 2 / self._apa[ok]).tolist())
        return self.cfg.terminal_scale * (min(levels) if levels else 1.0)

    # --- problem --------------------------------------------------------------------------------
    def _qp_matrices(self, n_rows: int, nt: int) -> tuple[FloatArray, FloatArray]:
        """The QP's (constant) Hessian in z = [u; p; s; s_N] and the slacks' columns of its rows."""
        cfg, nx, nu, ns, n = self.cfg, self.nx, self.nu, self.ns, self.cfg.horizon
        nsl, nup = ns + 1, n * nu + self.npos
        hdiag = np.zeros((nup + nsl, nup + nsl))
        hdiag[:nu, :nu] = 2 * self.R
        for k in range(1, n):
            hdiag[k * nu : (k + 1) * nu, k * nu : (k + 1) * nu] = 2 * cfg.backup_weight * np.diag(self._half**-2.0)
        hdiag[nup:, nup:] = 2 * cfg.slack_l2 * np.eye(nsl)
        hdiag[:nup, :nup] += 2 * REGULARIZATION * np.eye(nup)
        slack_map = np.zeros((n_rows, nsl))
        for k in range(n - 1 if ns else 0):
            slack_map[k * ns : (k + 1) * ns, :ns] = -np.eye(ns)
        slack_map[n_rows - 2 * nx - nt :, ns] = -1.0
        return hdiag, slack_map

    def _build(self) -> None:
        """One CasADi function (u_bar, p_0, p bounds, parameters, theta) -> (u, x_s's positions p,
        [worst row, terminal, slack], predicted states): the condensed Gauss-Newton QP at u_bar, solved
        with DAQP, then the certification rollout of its solution on the full model.

        Built in MX so the residual MLP runs as dense matrix products (its SX expansion, one scalar
        operation per weight, was most of the cost), the nominal step and its Jacobians as SX functions
        per stage; the sensitivities are condensed by the recursion S_{k+1} = A_k S_k + [0 B_k 0]."""
        cfg, pm = self.cfg, self.pm
        nx, nu, ns, nh, n, npos = self.nx, self.nu, self.ns, self.nh, cfg.horizon, self.npos
        nt, nth, has_res = len(self._pos_rows), pm.theta.size, pm.residual is not None
        x, u = pm.x, pm.u
        f_nom = self.model.rk4_function(self.dt, self.substeps)(x, u, ca.DM.zeros(WRENCH_SIZE))
        nom = ca.Function("mpsc_nom", [x, u], [f_nom, ca.jacobian(f_nom, x), ca.jacobian(f_nom, u)], {"cse": True})
        nom_f = ca.Function("mpsc_nom_f", [x, u], [f_nom], {"cse": True})
        soft = ca.vertcat(*[constraint_expr(c, x, u) for c in self.soft]) if ns else ca.SX(0, 1)
        hard = ca.vertcat(*[constraint_expr(c, x, u) for c in self.hard]) if nh else ca.SX(0, 1)
        soft_lin = ca.Function("mpsc_soft", [x, u], [soft, ca.jacobian(soft, x), ca.jacobian(soft, u)])
        hard_lin = ca.Function("mpsc_hard", [x, u], [hard, ca.jacobian(hard, u)])
        th = ca.MX.sym("th", nth)
        res: ca.Function | None = None
        res_jac: ca.Function | None = None
        if pm.residual is not None:
            xm, um = ca.MX.sym("x", nx), ca.MX.sym("u", nu)
            # The residual's own expression, in MX (its casadi calls take MX as well as SX).
            gm: Any = pm.residual.symbolic(cast(Any, xm), cast(Any, um), cast(Any, th))
            res = ca.Function("mpsc_g", [xm, um, th], [gm])
            res_jac = ca.Function("mpsc_g_jac", [xm, um, th], [ca.jacobian(gm, xm), ca.jacobian(gm, um)])

        def model_step(xk: Any, uk: Any, ths: Any) -> Any:
            """The prediction model's step, without the offset-free correction."""
            return nom_f(xk, uk) + (res(xk, uk, ths) if res is not None else 0)

        self._lqr_rollout = self._build_lqr_rollout(model_step, th)
        # Parameters: x0, u_p, x_s0 (positions 0), c, tightening (N ns), the terminal position rows'
        # right-hand sides (b - t(N) - sqrt(c a'P^-1 a): nt), their relaxation (nt), P and L (column-major),
        # the offset-free correction e_hat (nx; zero without it).
        sizes = [nx, nu, nx, 1, ns * n, nt, nt, nx * nx, nx * nx, nx]
        # Linearization and certification as functions of their own: in SX without a residual (a few
        # scalar operations per stage, evaluated far faster than an MX graph of small matrix products),
        # in MX with one (its MLP as dense matrix products); the QP between them.
        sym: Any = ca.MX if has_res else ca.SX
        ths = th if has_res else sym.sym("th", nth)
        ps = sym.sym("p", sum(sizes))
        parts = ca.vertsplit(ps, np.cumsum([0, *sizes]).tolist())
        x0, up, xs0, c, tight, trhs, relax = parts[:7]
        ehat = parts[9]
        lmat: Any = ca.reshape(parts[8], nx, nx)
        ubs, pzs = sym.sym("ubar", n * nu), sym.sym("pz0", npos)
        ep = ca.DM(self._ep)
        lin_a = ca.DM(self._lin_a[self._pos_rows]) if nt else ca.DM(0, nx)

        def at_stage(k: int, block: Any, rows: int) -> Any:
            """`block` (rows x nu) in the columns of u_k of a (rows x N nu) matrix."""
            return ca.horzcat(sym(rows, k * nu), block, sym(rows, (n - k - 1) * nu))

        # Linearization at u_bar on the full model (the residual's Jacobian through its MLP at every stage).
        xk, sens = x0, sym(nx, n * nu)
        soft_v, soft_j, hard_v, hard_j = [], [], [], []
        for k in range(n):
            uk = ubs[k * nu : (k + 1) * nu]
            if k > 0 and ns:
                g, g_x, g_u = soft_lin(xk, uk)
                soft_v.append(g + tight[k * ns : (k + 1) * ns])
                soft_j.append(g_x @ sens + at_stage(k, g_u, ns))
            if nh:
                h, h_u = hard_lin(xk, uk)
                hard_v.append(h)
                hard_j.append(at_stage(k, h_u, nh))
            f, a_k, b_k = nom(xk, uk)
            if res is not None and res_jac is not None:
                gx, gu = res_jac(xk, uk, ths)
                f, a_k, b_k = f + res(xk, uk, ths), a_k + gx, b_k + gu
            f = f + ehat
            sens = ca.horzcat(a_k @ sens[:, : k * nu], b_k, sym(nx, (n - k - 1) * nu))
            xk = f
        en = xk - xs0 - ep @ pzs
        # In the QP the terminal ellipsoid is replaced by the box |L (x_N - x_s)|_inf <= 0.99 sqrt(c / nx)
        # inside it: linear in x_N, so its linearization is never vacuous (the ellipsoid's is at its
        # centre); the certification checks the ellipsoid itself.
        half = 0.99 * ca.sqrt(ca.fmax(c, 0) / nx)
        box_v = ca.vertcat(lmat @ en - half, -lmat @ en - half)
        box_j = ca.vertcat(ca.horzcat(lmat @ sens, -lmat @ ep), ca.horzcat(-lmat @ sens, lmat @ ep))
        pos_v = lin_a @ (xs0 + ep @ pzs) - trhs - relax if nt else sym(0, 1)
        pos_j = ca.horzcat(sym(nt, n * nu), lin_a @ ep) if nt else sym(0, n * nu + npos)
        rows0 = ca.vertcat(*soft_v, *hard_v, box_v, pos_v)
        jac = ca.vertcat(*[ca.horzcat(j, sym(j.shape[0], npos)) for j in soft_j + hard_j], box_j, pos_j)
        lin = ca.Function("mpsc_lin", [ubs, pzs, ps, ths], [rows0, jac], {"cse": True} if not has_res else {})
        certify = self._build_certify(sym, ps, parts, ths, model_step, soft_lin, hard_lin)

        # The QP, in MX around the two.
        p = ca.MX.sym("p", sum(sizes))
        ub, pz0 = ca.MX.sym("ubar", n * nu), ca.MX.sym("pz0", npos)
        p_lo, p_hi = ca.MX.sym("p_lo", npos), ca.MX.sym("p_hi", npos)
        rows0, jac = lin(ub, pz0, p, th)
        up = p[nx : nx + nu]
        n_soft, n_rows = (n - 1) * ns, rows0.shape[0]
        # QP in z = [u (N nu); p (npos); s (ns); s_N]: one slack per constraint row, shared by the
        # stages, and one for the terminal rows (so the QP always has a solution: a plan that misses
        # the terminal set is not certified, but it is the best warm start for the next step).
        nsl, nup = ns + 1, n * nu + npos
        nz = nup + nsl
        hdiag, slack_map = self._qp_matrices(n_rows, nt)
        qp = ca.conic("mpsc_qp", "daqp", {"h": ca.DM(hdiag).sparsity(), "a": ca.Sparsity.dense(n_rows, nz)},
                      {"error_on_fail": False})
        zbar = ca.vertcat(ub, pz0)
        # The terminal position rows are linear in p: a small backoff of their own keeps the QP's solution
        # strictly inside them, so the certification's exact check does not fail on rounding.
        backoff = np.r_[np.full(n_soft, cfg.backoff), np.zeros(n_rows - n_soft - nt), np.full(nt, POS_BACKOFF)]
        target = ca.vertcat(up, ub[nu:], pz0)  # u_0 = u_p, the rest of the backup = the warm start
        sol = qp(h=ca.DM(hdiag), g=ca.vertcat(-ca.DM(hdiag[:nup, :nup]) @ target, cfg.slack_l1 * ca.DM.ones(nsl)),
                 a=ca.horzcat(jac, ca.DM(slack_map)), lba=-ca.DM.inf(n_rows), uba=-rows0 - ca.DM(backoff) + jac @ zbar,
                 lbx=ca.vertcat(ca.repmat(ca.DM(self.u_low), n, 1), p_lo, ca.DM.zeros(nsl)),
                 ubx=ca.vertcat(ca.repmat(ca.DM(self.u_high), n, 1), p_hi, ca.DM.inf(nsl)))
        u_new, pz_new, slack = sol["x"][: n * nu], sol["x"][n * nu : nup], ca.mmax(sol["x"][nup:])
        worst, term, x_pred_m = certify(u_new, pz_new, p, th)
        self._solve = ca.Function("mpsc", [ub, pz0, p_lo, p_hi, p, th],
                                  [u_new, pz_new, ca.vertcat(worst, term, slack), x_pred_m])

    def _build_lqr_rollout(self, model_step: Any, th: Any) -> Any:
        """The terminal LQR law rolled out on the model: the warm start when there is no certified plan."""
        nx, nu = self.nx, self.nu
        xm0, xs_m, us_m, k_m = (ca.MX.sym("x", nx), ca.MX.sym("xs", nx), ca.MX.sym("us", nu),
                                ca.MX.sym("K", nu, nx))
        xk, plan = xm0, []
        for _ in range(self.cfg.horizon):
            uk = ca.fmin(ca.fmax(us_m - k_m @ (xk - xs_m), ca.DM(self.u_low)), ca.DM(self.u_high))
            plan.append(uk)
            xk = model_step(xk, uk, th)
        return ca.Function("mpsc_lqr_rollout", [xm0, xs_m, us_m, k_m, th], [ca.horzcat(*plan)])

    def _build_certify(self, sym: Any, ps: Any, parts: list[Any], ths: Any, model_step: Any, soft_lin: Any,
                       hard_lin: Any) -> Any:
        """Certification: the QP's inputs rolled out on the full model (with the correction e_hat):
        (u, p, parameters, theta) -> (worst tightened row, terminal e'Pe - c, predicted states)."""
        nx, nu, ns, nh, n, npos = self.nx, self.nu, self.ns, self.nh, self.cfg.horizon, self.npos
        nt = len(self._pos_rows)
        x0, _, xs0, c, tight, trhs, relax = parts[:7]
        pmat, ehat = ca.reshape(parts[7], nx, nx), parts[9]
        ep = ca.DM(self._ep)
        us_, pz_ = sym.sym("u", n * nu), sym.sym("pz", npos)
        xk, x_pred, cert = x0, [x0], []
        for k in range(n):
            uk = us_[k * nu : (k + 1) * nu]
            if k > 0 and ns:
                cert.append(soft_lin(xk, uk)[0] + tight[k * ns : (k + 1) * ns])
            if nh:
                cert.append(hard_lin(xk, uk)[0])
            xk = model_step(xk, uk, ths) + ehat
            x_pred.append(xk)
        en = xk - xs0 - ep @ pz_
        term = en.T @ pmat @ en - c
        if nt:
            cert.append(ca.DM(self._lin_a[self._pos_rows]) @ (xs0 + ep @ pz_) - trhs - relax)
        rows_c = ca.vertcat(*cert) if cert else sym(0, 1)
        worst = ca.mmax(rows_c) if rows_c.shape[0] else sym(-np.inf)
        return ca.Function("mpsc_cert", [us_, pz_, ps, ths], [worst, term, ca.horzcat(*x_pred)])

    # --- runtime --------------------------------------------------------------------------------
    def reset(self) -> None:
        self.steps = self.interventions = self.infeasible_steps = 0
        self._plan: FloatArray | None = None  # (N, nu): warm start for the next call
        self._backup: FloatArray | None = None  # (N-1, nu): the certified inputs for the next steps
        self._backup_x: FloatArray = np.zeros((0, self.nx))
        self._backup_xs = self.x_s0.copy()
        self._plan_xn = self.x_s0.copy()  # the last certified plan's predicted x_N
        self._last_pred: FloatArray | None = None  # the model's prediction of the next state (offset_free)
        self._pred_next: FloatArray | None = None  # this step's x_1 of the certified input (no correction)
        self._us_now = self.u_s.copy()  # u_s with this step's correction
        self._used = 0
        self._certified_last = False

    def set_residual_weights(self, theta: ArrayLike) -> None:
        if not self.cfg.use_residual:
            return  # this MPSC plans with the nominal model (use_residual: false)
        old = self.pm.theta
        self.pm.set_residual_weights(theta)
        self._th = ca.DM(self.pm.theta)
        try:
            self._update_model()
        except ConfigError:
            self.pm.theta, self._th = old, ca.DM(old)
            raise
        self._plan = None

    def _lqr_law(self, x: FloatArray, xs: FloatArray) -> FloatArray:
        u: FloatArray = np.clip(self._us_now - self.K @ (x - xs), self.u_low, self.u_high)
        return u

    @staticmethod
    def _is_certified(plan: FloatArray, pz: FloatArray, worst: float, term: float) -> bool:
        return bool(np.all(np.isfinite(plan)) and np.all(np.isfinite(pz))) and worst <= 0.0 and term <= 0.0

    def _attempt(self, guess: FloatArray, pz0: FloatArray, p_lo: FloatArray, p_hi: FloatArray, p: FloatArray
                 ) -> tuple[FloatArray, FloatArray, FloatArray, float, float, float]:
        """One solve from `guess`: (plan, x_s's positions, predicted states, worst row, terminal, slack)."""
        n, nu = self.cfg.horizon, self.nu
        try:
            u_dm, pz_dm, info_dm, x_dm = self._solve(guess.reshape(-1), pz0, p_lo, p_hi, p, self._th)
        except RuntimeError:
            nan = float("nan")
            return (np.full((n, nu), nan), np.full(self.npos, nan), np.full((n + 1, self.nx), nan), nan, nan, nan)
        worst, term, slack = (float(v) for v in np.asarray(info_dm, dtype=np.float64).reshape(-1))
        return (np.asarray(u_dm, dtype=np.float64).reshape(n, nu), np.asarray(pz_dm, dtype=np.float64).reshape(-1),
                np.asarray(x_dm, dtype=np.float64).T, worst, term, slack)

    def _guess(self, x: FloatArray, xs: FloatArray, warm: bool = True) -> FloatArray:
        """Warm start: the previous certified plan shifted and completed by the terminal LQR law at its
        predicted x_N (the candidate of the recursive-feasibility argument), else the terminal LQR law
        rolled out."""
        if warm and self._plan is not None:
            last = self._lqr_law(self._plan_xn, self._backup_xs)
            return np.vstack([self._plan[1:], last])
        plan = np.asarray(self._lqr_rollout(x, xs, self._us_now, self.K, self._th), dtype=np.float64).T
        if not np.all(np.isfinite(plan)):
            plan = np.tile(self.u_s, (self.cfg.horizon, 1))
        return plan

    def _params(self, x: FloatArray, up: FloatArray, xs: FloatArray, c: float, tight: FloatArray,
                tight_n: FloatArray, ehat: FloatArray) -> FloatArray:
        rows = self._pos_rows
        trhs = np.zeros(0)
        if rows:
            ext = np.sqrt(max(c, 0.0) * self._apa[rows])
            trhs = self._lin_b[rows] - tight_n[[self._lin_rows[i] for i in rows]] - ext
        relax = np.full(len(rows), 0.0 if self.cfg.terminal_position == "free" else RELAX)
        return np.concatenate([x, up, xs, [c], tight, trhs, relax, self.P.ravel(order="F"), self.L.ravel(order="F"),
                               ehat])

    def offset(self, x: FloatArray) -> FloatArray:
        """e_hat: the last one-step prediction error (zero without offset_free or without a last step)."""
        if not self.cfg.offset_free or self._last_pred is None:
            return np.zeros(self.nx)
        e: FloatArray = x - self._last_pred
        e[self.pos] = 0.0  # positions: a constant offset there would make x_s drift (v_s = -e_p / dt)
        return e

    def _shifted_steady_state(self, xs: FloatArray, ehat: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(x_s, u_s, imbalance) of the model with the correction e_hat: x_s's non-position entries and
        u_s moved by the steady state's linear sensitivity to e_hat; what that leaves unbalanced."""
        if not np.any(ehat):
            return xs, self.u_s, np.zeros(self.nx)
        dz = self._ss_sens @ ehat
        nf = len(self._free_x)
        xs = xs.copy()
        xs[self._free_x] += dz[:nf]
        us = np.clip(self.u_s + dz[nf:], self.u_low, self.u_high)
        nxt = np.asarray(self._rollout(xs, us, self._th), dtype=np.float64).reshape(-1) + ehat
        return xs, us, np.abs(nxt - xs) - self.imbalance

    def filter(self, x: ArrayLike, u_proposed: ArrayLike, t: float) -> tuple[FloatArray, FilterReport]:
        self._pred_next = None
        u, rep = self._filter(x, u_proposed, t)
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.cfg.offset_free and xv.size == self.nx and np.all(np.isfinite(xv)) and np.all(np.isfinite(u)):
            # The model's prediction of the next state from this one and the applied input.
            self._last_pred = (self._pred_next if self._pred_next is not None else
                               np.asarray(self._rollout(xv, u, self._th), dtype=np.float64).reshape(-1))
        else:
            self._last_pred = None
        return u, rep

    def _filter(self, x: ArrayLike, u_proposed: ArrayLike, t: float) -> tuple[FloatArray, FilterReport]:
        start = time.perf_counter()
        self.steps += 1
        xv, up, problem = check_inputs(self.nx, self.nu, x, u_proposed)
        if xv is None:
            return self._fallback(None, up, f"{problem}: ", start)
        up_used = self.u_s.copy() if problem else up
        n = self.cfg.horizon
        if self.cfg.offset_free and self._last_pred is None:
            return self._fallback(xv, up, "no one-step prediction error measured yet (offset_free): ", start)
        ehat = self.offset(xv)
        xs, self._us_now, shift_imb = self._shifted_steady_state(self.steady_state(t, xv), ehat)
        d = self.one_step_margin(xv, up_used) + np.maximum(shift_imb, 0.0)
        tight = self._tube_k @ d
        tight_n = self._tube_n @ d
        c = self.terminal_level(xs, tight_n, self._us_now)
        p = self._params(xv, up_used, xs - self._ep @ xs[self.pos] if self.pos else xs, c, tight, tight_n, ehat)
        pz0 = xs[self.pos]
        free = self.cfg.terminal_position == "free"
        p_lo = np.full(self.npos, -np.inf) if free else pz0
        p_hi = np.full(self.npos, np.inf) if free else pz0
        if self._plan is not None and self._certified_last:
            guess = self._guess(xv, xs, True)
        else:
            guess = self._guess(xv, xs, False)
        for _ in range(self.cfg.iterations):
            plan, pz, x_plan, worst, term, slack = self._attempt(guess, pz0, p_lo, p_hi, p)
            if self._is_certified(plan, pz, worst, term):
                break
            # Not certified: one more Gauss-Newton step from this plan (from the terminal LQR law
            # rolled out if the QP failed).
            guess = np.clip(plan, self.u_low, self.u_high) if np.all(np.isfinite(plan)) else self._guess(xv, xs, False)
        finite = bool(np.all(np.isfinite(plan)) and np.all(np.isfinite(pz)))
        if not self._is_certified(plan, pz, worst, term):
            why = "QP failed" if not finite else f"backup not certified (constraint {worst:.3g}, terminal {term:.3g})"
            return self._fallback(xv, up, f"{problem + '; ' if problem else ''}{why}: ", start, slack)
        self._certified_last = True
        plan = np.clip(plan, self.u_low, self.u_high)
        if not problem and np.all(np.abs(plan[0] - up) <= SNAP * self._half):
            plan[0] = up  # the QP's rounding, not an intervention (certified with backoff to spare)
        u = plan[0].copy()
        self._backup = plan[1:].copy()
        self._backup_x = x_plan[1:n].copy()
        self._plan_xn = x_plan[n].copy()
        self._backup_xs = xs.copy()
        if self.pos:
            self._backup_xs[self.pos] = pz
        self._used = 0
        self._plan = plan
        self._pred_next = np.asarray(self._rollout(xv, u, self._th), dtype=np.float64).reshape(-1)
        active = self._active(self._pred_next + ehat, u, tight)
        rep = make_report(self.name, up, u, active, max(slack, 0.0), bool(problem),
                          f"{problem}: equilibrium input certified" if problem else "", time.perf_counter() - start)
        self.interventions += rep.intervened
        self.infeasible_steps += rep.infeasible
        return u, rep

    def _active(self, x1: FloatArray, u: FloatArray, tight: FloatArray) -> list[str]:
        """Rows the first predicted state x_1 is within 1e-6 of (after tightening)."""
        if not self.ns:
            return []
        g = np.concatenate([c.values(x1, u) for c in self.soft])
        return [self.row_names[i] for i in np.flatnonzero(g + tight[self.ns : 2 * self.ns] + self.cfg.backoff >= -1e-6)]

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
            # About the last certified plan's steady state; before any, the one at the current position.
            u = self._lqr_law(x, self._backup_xs if self._backup is not None else self._at_position(x))
            self._plan = None
            what = f"{why}terminal LQR law"
        else:
            u = np.clip(self.u_s, self.u_low, self.u_high)
            what = f"{why}equilibrium input"
        self._certified_last = False
        rep = make_report(self.name, up, u, [], slack if np.isfinite(slack) else float("inf"), True, what,
                          time.perf_counter() - start)
        self.interventions += rep.intervened
        self.infeasible_steps += 1
        return u, rep
