"""Nonlinear MPC with CasADi: multiple shooting, RK4, soft state constraints, a learned residual.

Problem at time t from state x0, with the task's reference (x_ref_k, u_ref_k) at t + k dt:

    min   sum_{k<N} |x_k - x_ref_k|_Q^2 + |u_k - u_ref_k|_R^2 + rho1 1's_k + rho2 |s_k|^2 + |x_N - x_ref_N|_P^2
    s.t.  x_0 = x0,  x_{k+1} = F(x_k, u_k) + g_theta(x_k, u_k) + E d  (RK4 + learned residual
                                                                    + disturbance estimate)
          u_low <= u_k <= u_high                                   (hard)
          c_state(x_k, u_k) <= s_k,  s_k >= 0,  k = 0..N-1        (soft, exact L1 + L2 penalty)
          c_input(u_k) <= 0                                        (hard)

Variables are ordered stage-wise [x_0, (u_0, s_0), x_1, ..., x_N] and constraints
[gap_0, path_0, gap_1, path_1, ...] (x_0 = x0 is part of path_0), which is the structure HPIPM and
fatrop exploit. The slack is part of each stage's input so every stage has the same size; the
terminal state carries no slack (HPIPM admits no terminal input), so state constraints act on x_0
to x_{N-1}. The residual's weights theta and the reference are parameters: new weights need no
rebuild. The cost is quadratic, so the SQP solvers use its constant Hessian (Gauss-Newton).

Offset-free prediction (`disturbance_gain` > 0): d is a per-step offset on the states
`disturbance_states` (E selects them; default the model's velocity states), held constant over the
horizon and a parameter of the NLP. Each solve from x_k first updates it from the last step's
prediction error (the step before must be exactly one dt earlier and its solve successful; else
the update is skipped and d kept):

    d <- d + gain * E'(x_k - F(x_{k-1}, u_{k-1}) - g_theta(x_{k-1}, u_{k-1}) - E d)

with u_{k-1} the command that solve returned (`note_applied` replaces it when another one went
out) and theta the weights in use now. A constant offset c on those states is then estimated
without bias (d -> c, error shrinking by (1 - gain) per step). With gain 0 (the default) there is
no d: the NLP and every result are those of the controller without the option.

Previous command (a residual with `previous_input`, safe_ctrl_ros.control.residual): the residual
is g_theta(x_k, u_k, u_{k-1}), so stage k's prediction uses stage k-1's input. To keep the stage
structure HPIPM and fatrop exploit (each gap links only stage k and k+1), the stage state is
augmented to z_k = [x_k; u_{k-1}] with z_{k+1} = [F(x_k, u_k) + g_theta(x_k, u_k, u_{k-1}); u_k];
u_{-1} is a parameter: the last applied command (the command the last solve returned, or what
`note_applied` gave; when there is none from exactly one dt before, e.g. at the first solve or
after a failed one, the reference input u_ref_0). Costs and constraints act on x_k only. Without
the option the NLP is exactly as before (no extra states or parameters).
Solvers (docs/CONTROLLERS.md has the measured timings):
- rti_hpipm (default): Gauss-Newton real-time iteration as one CasADi function: linearize at the
  shifted previous solution, solve the stage-structured QP with HPIPM, take the full step
  (`sqp_iterations` such steps per call; with `sqp_tol` > 0 it stops early once a step's largest
  entry is at most sqp_tol: Gauss-Newton SQP to convergence). One call from Python, none of
  nlpsol's bookkeeping;
- sqp_hpipm: CasADi's sqpmethod with HPIPM (the same iteration through nlpsol, with its line search
  when sqp_iterations > 1);  sqp_qrqp: sqpmethod with CasADi's active-set qrqp;  fatrop;
  ipopt (interior point, to convergence).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import casadi as ca
import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from safe_ctrl_ros.control.lqr import _weight_matrix, discretize
from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety.constraints import Constraint, ConstraintSet
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray, SymbolicModel, as_vector
from safe_ctrl_ros.tasks import Task

SOLVERS = ("rti_hpipm", "sqp_hpipm", "sqp_qrqp", "fatrop", "ipopt")
# sqpmethod reports hitting max_iter as not successful: in real-time iteration that is the plan.
# Neither it nor a QP called inside rti_hpipm's function reports a failed QP (e.g. infeasible), so
# `solve` checks the iterate itself: the linear constraints (x_0 = x0, input bounds, hard input
# constraints) hold to LINEAR_TOL after any solved QP; the first dynamics gap (the one the applied
# command acts through), linearized once per call in RTI, must stay below GAP_TOL.
_SQP_OK = {"solve_succeeded", "maximum_iterations_exceeded"}
LINEAR_TOL = 1e-6
GAP_TOL = 1.0


@dataclass
class NmpcConfig:
    horizon: int = 20
    dt: float = 0.02
    Q: Any = 1.0
    R: Any = 0.1
    P: Any = None  # terminal weight; None = the LQR cost-to-go (discrete Riccati solution) at the goal
    solver: str = "rti_hpipm"
    sqp_iterations: int = 1  # 1 = real-time iteration
    # rti_hpipm only: stop iterating once the full step's largest entry |d|_inf <= sqp_tol (then
    # sqp_iterations is the most it takes); 0 = always take sqp_iterations steps.
    sqp_tol: float = 0.0
    # Warm start the multipliers with the previous ones shifted by one stage, like the primal
    # solution (x_0 = x0's multiplier from the first gap's: the costate). Off by default: the
    # built-in solvers either ignore them (HPIPM cold-starts) or were tuned without; ipopt uses them
    # only with warm_start_init_point (bench/mpc_solve.py's converged group does that).
    shift_duals: bool = False
    rk4_substeps: int = 1
    slack_l1: float = 1000.0
    slack_l2: float = 1000.0
    # Soft constraints are imposed as g <= -backoff: the solver's precision (1e-8 and more) then
    # never shows up as a violation in the monitor, which counts g > 0.
    constraint_backoff: float = 1e-4
    solver_options: dict[str, Any] = field(default_factory=dict)
    # Offset-free prediction (module docstring): filter gain of the disturbance estimate in [0, 1],
    # 0 = off (no estimate in the NLP); the states it acts on, None = the model's velocity states.
    disturbance_gain: float = 0.0
    disturbance_states: tuple[int, ...] | None = None

    def validate(self) -> None:
        if self.horizon < 1:
            raise ConfigError(f"nmpc horizon must be >= 1, got {self.horizon}")
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"nmpc dt must be positive, got {self.dt}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"nmpc solver must be one of {SOLVERS}, got '{self.solver}'")
        if self.sqp_iterations < 1 or self.rk4_substeps < 1:
            raise ConfigError("nmpc sqp_iterations and rk4_substeps must be >= 1")
        if not (np.isfinite(self.sqp_tol) and self.sqp_tol >= 0):
            raise ConfigError(f"nmpc sqp_tol must be >= 0, got {self.sqp_tol}")
        if self.sqp_tol > 0 and self.solver != "rti_hpipm":
            raise ConfigError(f"nmpc sqp_tol is for rti_hpipm (the other solvers take their own tolerance "
                              f"options), got solver '{self.solver}'")
        if self.slack_l1 < 0 or self.slack_l2 < 0:
            raise ConfigError("nmpc slack penalties must be >= 0")
        if not (np.isfinite(self.constraint_backoff) and self.constraint_backoff >= 0):
            raise ConfigError("nmpc constraint_backoff must be >= 0")
        gain = self.disturbance_gain
        if isinstance(gain, bool) or not isinstance(gain, (int, float, np.floating, np.integer)) \
                or not (np.isfinite(gain) and 0.0 <= gain <= 1.0):
            raise ConfigError(f"nmpc disturbance_gain must be a number in [0, 1] (0 = off), got {gain!r}")
        states = self.disturbance_states
        if states is not None and (len(states) == 0 or len(set(states)) != len(states)):
            raise ConfigError(f"nmpc disturbance_states must be distinct state indices (None = the velocity "
                              f"states), got {states!r}")


@dataclass
class NmpcResult:
    u: FloatArray
    x_pred: FloatArray  # (N+1, nx)
    u_pred: FloatArray  # (N, nu)
    success: bool
    status: str
    iterations: int
    solve_time_s: float
    cost: float
    max_slack: float
    # rti_hpipm with sqp_tol > 0: the largest entry of the last full step taken (converged if
    # <= sqp_tol); NaN otherwise.
    step_norm: float = float("nan")
    # The disturbance estimate this solve predicted with (per state, zeros off the estimated states
    # and with disturbance_gain 0): x_{k+1} was predicted as F + g_theta + this, so a residual's
    # training target for the transition (x_k, u_k, x_{k+1}) without it is x_{k+1} - F(x_k, u_k) - this.
    disturbance: FloatArray = field(default_factory=lambda: np.zeros(0))


class _Iterate(NamedTuple):
    """What one solver call leaves: primal iterate, multipliers (kept as CasADi DM: they only go
    back into the next call), cost, status."""

    w: FloatArray
    lam_x: ca.DM
    lam_g: ca.DM
    cost: float
    status: str
    ok: bool
    iterations: int
    step_norm: float = float("nan")


def _constraint_expr(c: Constraint, x: ca.SX, u: ca.SX) -> ca.SX:
    z = {"state": x, "input": u, "input_and_state": ca.vertcat(x, u)}[c.variable]
    za = ca.vertcat(*[z[i] for i in c.active_dims])
    if c.kind == "quadratic":
        return za.T @ ca.DM(c.A) @ za - float(c.b[0])
    return ca.DM(c.A) @ za - ca.DM(c.b)


class Nmpc:
    def __init__(
        self,
        model: SymbolicModel,
        task: Task,
        config: NmpcConfig | None = None,
        constraints: ConstraintSet | None = None,
        residual: ResidualSpec | None = None,
    ) -> None:
        self.model, self.task = model, task
        self.cfg = cfg = config or NmpcConfig()
        cfg.validate()
        self.residual = residual
        if residual is not None and (residual.nx, residual.nu) != (model.nx, model.nu):
            raise ConfigError(
                f"residual is for nx={residual.nx}, nu={residual.nu}; {model.name} has {model.nx}, {model.nu}"
            )
        self.theta: FloatArray = np.zeros(residual.num_params if residual else 0)
        # theta as CasADi DM for the estimate's one-step prediction: converting the weights from
        # numpy at every call was most of the update's time.
        self._theta_dm = ca.DM(self.theta)
        cons = constraints or ConstraintSet([])
        self.soft = [c for c in cons.constraints if c.variable != "input"]
        self.hard = [c for c in cons.constraints if c.variable == "input"]
        self.ns = sum(c.num_rows for c in self.soft)
        nx, nu = model.nx, model.nu
        self.nv = nu + self.ns  # stage "input": control and slack
        self.Q = _weight_matrix(cfg.Q, nx, "nmpc Q")
        self.R = _weight_matrix(cfg.R, nu, "nmpc R")
        self.P = self._riccati_terminal() if cfg.P is None else _weight_matrix(cfg.P, nx, "nmpc P")
        self.disturbance_states = self._disturbance_states()
        self._d: FloatArray = np.zeros(len(self.disturbance_states))
        self._last: tuple[float, FloatArray, FloatArray] | None = None  # (t, x, u) of the last solve
        # previous_input: the stage state is [x; u_prev] (module docstring); nz its size.
        self.previous_input = bool(residual is not None and residual.previous_input)
        self.nz = nx + (nu if self.previous_input else 0)
        self._applied: tuple[float, FloatArray] | None = None  # (t, command) last applied
        self._last_prev: FloatArray = np.zeros(nu)  # the u_prev the last solve predicted with
        self._solve_t: float | None = None  # the time of the last solve
        self._build()
        self.u_low, self.u_high = model.input_bounds
        self.reset()

    def _disturbance_states(self) -> tuple[int, ...]:
        """The states the disturbance estimate acts on (none when it is off)."""
        if self.cfg.disturbance_gain == 0:
            return ()
        states = self.cfg.disturbance_states
        if states is None:
            states = tuple(self.model.velocity_indices)
            if not states:
                raise ConfigError(f"{self.model.name} names no velocity states: give nmpc disturbance_states")
        bad = [i for i in states if not 0 <= i < self.model.nx]
        if bad:
            raise ConfigError(f"nmpc disturbance_states {bad} are not states of {self.model.name} "
                              f"(0..{self.model.nx - 1})")
        return tuple(int(i) for i in states)

    def _riccati_terminal(self) -> FloatArray:
        """The infinite-horizon LQR cost-to-go at the goal: a short horizon then still looks far."""
        x_goal, u_eq = self.task.goal, self.model.equilibrium()[1]
        try:
            a, b = self.model.linearize(x_goal, u_eq)
            ad, bd = discretize(a, b, self.cfg.dt, "exact")
            p: FloatArray = scipy.linalg.solve_discrete_are(ad, bd, self.Q, self.R)
        except (np.linalg.LinAlgError, ValueError):
            return self.Q
        return 0.5 * (p + p.T)

    # --- problem --------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, m = self.cfg, self.model
        nx, nu, ns, n, nz, prev = m.nx, m.nu, self.ns, cfg.horizon, self.nz, self.previous_input
        rk4 = m.rk4_function(cfg.dt, cfg.rk4_substeps)
        xs, us, ups = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("u_prev", nu)
        ntheta = self.theta.size
        theta = ca.SX.sym("theta", ntheta)
        f_next = rk4(xs, us, ca.DM.zeros(WRENCH_SIZE))
        if self.residual is not None:
            f_next = f_next + self.residual.symbolic(xs, us, theta, *([ups] if prev else []))
        # (x, u, theta) -> x_next; with previous_input (x, u, theta, u_prev).
        self.step_fn = ca.Function("F", [xs, us, theta, *([ups] if prev else [])], [f_next])
        soft_expr = ca.vertcat(*[_constraint_expr(c, xs, us) for c in self.soft]) if self.soft else ca.SX(0, 1)
        hard_expr = ca.vertcat(*[_constraint_expr(c, xs, us) for c in self.hard]) if self.hard else ca.SX(0, 1)
        soft_fn = ca.Function("soft", [xs, us], [soft_expr])
        hard_fn = ca.Function("hard", [xs, us], [hard_expr])
        nh = hard_expr.shape[0]

        p_x0 = ca.SX.sym("x0", nx)
        p_xr = ca.SX.sym("xr", nx, n + 1)
        p_ur = ca.SX.sym("ur", nu, n)
        nd = len(self.disturbance_states)
        p_d = ca.SX.sym("d", nd)
        p_up = ca.SX.sym("u_prev", nu if prev else 0)
        offset = ca.SX.zeros(nz)
        for j, i in enumerate(self.disturbance_states):
            offset[i] = p_d[j]
        X = [ca.SX.sym(f"x{k}", nz) for k in range(n + 1)]
        V = [ca.SX.sym(f"v{k}", nu + ns) for k in range(n)]
        w, g, lbg, ubg, lbw, ubw = [], [], [], [], [], []
        kinds: list[str] = []  # per g row: gap | init | soft | hard
        cost = ca.SX(0)
        for k in range(n + 1):
            xk = X[k][:nx] if prev else X[k]
            e = xk - p_xr[:, k]
            if k == n:
                w.append(X[k])
                lbw += [-np.inf] * nz
                ubw += [np.inf] * nz
                cost += e.T @ ca.DM(self.P) @ e
                break
            u, s = V[k][:nu], V[k][nu:]
            w += [X[k], V[k]]
            lbw += [-np.inf] * nz + list(self.model.input_bounds[0]) + [0.0] * ns
            ubw += [np.inf] * nz + list(self.model.input_bounds[1]) + [np.inf] * ns
            du = u - p_ur[:, k]
            cost += e.T @ ca.DM(self.Q) @ e + du.T @ ca.DM(self.R) @ du
            if ns:
                cost += cfg.slack_l1 * ca.sum1(s) + cfg.slack_l2 * ca.sumsqr(s)
            # gap_k, then path_k (x_0 = x0 at stage 0; soft rows; hard input rows)
            # with previous_input z_{k+1} = [F(x_k, u_k) + g(x_k, u_k, u_{k-1}); u_k]
            x_next = ca.vertcat(self.step_fn(xk, u, theta, X[k][nx:]), u) if prev else self.step_fn(X[k], u, theta)
            g.append(X[k + 1] - (x_next + offset if nd else x_next))
            lbg += [0.0] * nz
            ubg += [0.0] * nz
            kinds += ["gap"] * nz
            path = []
            if k == 0:
                path.append(X[0] - (ca.vertcat(p_x0, p_up) if prev else p_x0))
                lbg += [0.0] * nz
                ubg += [0.0] * nz
                kinds += ["init"] * nz
            if ns:
                path.append(soft_fn(xk, u) + cfg.constraint_backoff - s)
                lbg += [-np.inf] * ns
                ubg += [0.0] * ns
                kinds += ["soft"] * ns
            if nh:
                path.append(hard_fn(xk, u))
                lbg += [-np.inf] * nh
                ubg += [0.0] * nh
                kinds += ["hard"] * nh
            g += path
        self.w, self.g = ca.vertcat(*w), ca.vertcat(*g)
        self.p = ca.vertcat(p_x0, ca.vec(p_xr), ca.vec(p_ur), theta, *([p_d] if nd else []), *([p_up] if prev else []))
        self.lbw, self.ubw = np.array(lbw), np.array(ubw)
        self.lbg, self.ubg = np.array(lbg), np.array(ubg)
        self.stage = nz + nu + ns
        nlp = {"x": self.w, "f": cost, "g": self.g, "p": self.p}
        self._check = self._make_check(kinds)
        self._cost_fn = ca.Function("cost", [self.w, self.p], [cost])
        # The solver is one CasADi function either way; new residual weights are a parameter of it.
        if cfg.solver == "rti_hpipm":
            self.solver = self._make_rti(cost, nh)
        else:
            self.solver = self._make_solver(nlp, cost, nh)
            # Constant arguments converted once; nlpsol is called positionally (less overhead).
            self._bounds = [ca.DM(self.lbw), ca.DM(self.ubw), ca.DM(self.lbg), ca.DM(self.ubg)]
            self._out = {name: self.solver.index_out(name) for name in ("x", "f", "lam_x", "lam_g")}

    def _make_check(self, kinds: list[str]) -> ca.Function:
        """(w, p) -> (violation of the linear constraints, largest first dynamics gap)."""
        w, g = self.w, self.g
        parts = [ca.mmax(ca.fmax(ca.DM(self.lbw) - w, 0) + ca.fmax(w - ca.DM(self.ubw), 0))]
        hard = [i for i, k in enumerate(kinds) if k == "hard"]
        parts.append(ca.mmax(ca.fabs(w[: self.model.nx] - self.p[: self.model.nx])))  # x_0 = x0
        if self.previous_input:  # u_{-1} = the applied command (the last parameters)
            nu = self.model.nu
            parts.append(ca.mmax(ca.fabs(w[self.model.nx : self.nz] - self.p[self.p.shape[0] - nu :])))
        if hard:
            parts.append(ca.mmax(ca.fmax(g[hard] - ca.DM(self.ubg[hard]), 0)))
        first_gap = ca.mmax(ca.fabs(g[: self.model.nx]))
        return ca.Function("check", [w, self.p], [ca.mmax(ca.vertcat(*parts)), first_gap])

    def _make_solver(self, nlp: dict[str, ca.SX], cost: ca.SX, nh: int) -> ca.Function:
        cfg = self.cfg
        quiet = {"print_time": False}
        if cfg.solver in ("sqp_hpipm", "sqp_qrqp"):
            lam_f = ca.SX.sym("lam_f")
            lam_g = ca.SX.sym("lam_g", self.g.shape[0])
            hess = lam_f * ca.hessian(cost, self.w)[0]  # Gauss-Newton: the cost's constant Hessian
            hess_lag = ca.Function(
                "nlp_hess_l", [self.w, self.p, lam_f, lam_g], [hess], ["x", "p", "lam_f", "lam_g"], ["hess_gamma_x_x"]
            )
            opts: dict[str, Any] = {
                **quiet, "hess_lag": hess_lag, "max_iter": cfg.sqp_iterations, "print_header": False,
                "print_iteration": False, "print_status": False, "error_on_fail": False,
            }
            if cfg.sqp_iterations == 1:
                # Real-time iteration takes the full QP step: a line search would cut it short and
                # leave even the linear constraints (x_0 = x0) unmet (seen with the learned residual).
                opts["max_iter_ls"] = 0
            if cfg.solver == "sqp_hpipm":
                opts["qpsol"] = "hpipm"
                opts["qpsol_options"] = self._hpipm_options(nh)
            else:
                opts["qpsol"] = "qrqp"
                opts["qpsol_options"] = {"print_iter": False, "print_header": False, "error_on_fail": False}
            opts.update(cfg.solver_options)
            return ca.nlpsol("nmpc", "sqpmethod", nlp, opts)
        if cfg.solver == "fatrop":
            eq = [bool(lo == hi) for lo, hi in zip(self.lbg, self.ubg, strict=True)]
            opts = {**quiet, "structure_detection": "auto", "equality": eq, "fatrop.print_level": 0}
            opts.update(cfg.solver_options)
            return ca.nlpsol("nmpc", "fatrop", nlp, opts)
        opts = {**quiet, "ipopt.print_level": 0, "ipopt.sb": "yes", "ipopt.max_iter": 200}
        opts.update(cfg.solver_options)
        return ca.nlpsol("nmpc", "ipopt", nlp, opts)

    def _hpipm_options(self, nh: int) -> dict[str, Any]:
        """HPIPM with the stage sizes given by hand. The absolute-form "speed_abs" mode was the
        fastest in bench/mpc_solve.py and as accurate here (same closed-loop RMSE)."""
        nx, n = self.nz, self.cfg.horizon  # the stage state (x, and u_prev with previous_input)
        return {
            "N": n, "nx": [nx] * (n + 1), "nu": [self.nv] * n + [0],
            "ng": [nx + self.ns + nh] + [self.ns + nh] * (n - 1) + [0],
            "error_on_fail": False, "hpipm": {"iter_max": 100, "warm_start": 0, "mode": "speed_abs"},
        }

    def _make_rti(self, cost: ca.SX, nh: int) -> ca.Function:
        """(w0, p, lam_x, lam_g) -> (w, lam_x, lam_g, [cost, linear violation, first gap]).

        Each iteration solves the Gauss-Newton QP in the step d = w - w_k:
            min 1/2 d'H d + grad f(w_k)'d   s.t.  lbg - g(w_k) <= J(w_k) d <= ubg - g(w_k),  lbw - w_k <= d <= ubw - w_k
        and takes the full step; the QP's multipliers are the NLP's. H is constant (quadratic cost).
        """
        opts = dict(self.cfg.solver_options)
        qp_opts = {**self._hpipm_options(nh), **opts.pop("qpsol_options", {})}
        if opts:
            raise ConfigError(f"rti_hpipm takes only qpsol_options in solver_options, got {sorted(opts)}")
        hess = ca.hessian(cost, self.w)[0]
        h = ca.DM(ca.evalf(hess))
        jac = ca.jacobian(self.g, self.w)
        grad = ca.gradient(cost, self.w)
        lin = ca.Function("rti_linearization", [self.w, self.p], [self.g, jac, grad], {"cse": True})
        qp = ca.conic("rti_qp", "hpipm", {"h": h.sparsity(), "a": jac.sparsity()}, qp_opts)
        w0, p = ca.MX.sym("w0", self.w.shape[0]), ca.MX.sym("p", self.p.shape[0])
        lam_x0, lam_g0 = ca.MX.sym("lam_x0", self.w.shape[0]), ca.MX.sym("lam_g0", self.g.shape[0])
        w: Any = w0
        lam_x: Any = lam_x0
        lam_g: Any = lam_g0
        lbw, ubw, lbg, ubg = (ca.DM(v) for v in (self.lbw, self.ubw, self.lbg, self.ubg))
        if self.cfg.sqp_tol > 0 and self.cfg.sqp_iterations > 1:
            return self._make_gauss_newton(w0, p, lam_x0, lam_g0, lin, qp, h, (lbw, ubw, lbg, ubg))
        for _ in range(self.cfg.sqp_iterations):
            g, a, grad_k = lin(w, p)
            sol = qp(h=h, g=grad_k, a=a, lba=lbg - g, uba=ubg - g, lbx=lbw - w, ubx=ubw - w, lam_x0=lam_x, lam_a0=lam_g)
            w, lam_x, lam_g = w + sol["x"], sol["lam_x"], sol["lam_a"]
        linear, gap = self._check(w, p)
        info = ca.vertcat(self._cost_fn(w, p), linear, gap)
        return ca.Function("rti", [w0, p, lam_x0, lam_g0], [w, lam_x, lam_g, info])

    def _make_gauss_newton(self, w0: ca.MX, p: ca.MX, lam_x0: ca.MX, lam_g0: ca.MX, lin: ca.Function,
                           qp: ca.Function, h: ca.DM, bounds: tuple[ca.DM, ...]) -> ca.Function:
        """rti_hpipm's steps until |d|_inf <= sqp_tol (at most sqp_iterations): each step after the
        first is a conditional call (CasADi's Switch evaluates only the branch taken), so a
        converged solve stops paying for QPs. info gets [iterations, |d|_inf of the last step]."""
        lbw, ubw, lbg, ubg = bounds
        ws, ps = ca.MX.sym("w", w0.shape[0]), ca.MX.sym("p", p.shape[0])
        lxs, lgs = ca.MX.sym("lam_x", lam_x0.shape[0]), ca.MX.sym("lam_g", lam_g0.shape[0])
        g, a, grad_k = lin(ws, ps)
        sol = qp(h=h, g=grad_k, a=a, lba=lbg - g, uba=ubg - g, lbx=lbw - ws, ubx=ubw - ws, lam_x0=lxs, lam_a0=lgs)
        args = [ws, ps, lxs, lgs]
        step = ca.Function("gn_step", args, [ws + sol["x"], sol["lam_x"], sol["lam_a"], ca.norm_inf(sol["x"])])
        keep = ca.Function("gn_keep", args, [ws, lxs, lgs, ca.MX(0)])
        step_if = ca.Function.conditional("gn_step_if", [keep], step)  # 0: keep, otherwise: step
        w, lam_x, lam_g, norm = step(w0, p, lam_x0, lam_g0)
        iterations: Any = ca.MX(1)
        for _ in range(self.cfg.sqp_iterations - 1):
            again = norm > self.cfg.sqp_tol  # 0 once converged (a kept iterate reports norm 0)
            w, lam_x, lam_g, new_norm = step_if(again, w, p, lam_x, lam_g)
            iterations += again
            norm = ca.if_else(again, new_norm, norm)
        linear, gap = self._check(w, p)
        info = ca.vertcat(self._cost_fn(w, p), linear, gap, iterations, norm)
        return ca.Function("gauss_newton", [w0, p, lam_x0, lam_g0], [w, lam_x, lam_g, info])

    # --- runtime ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the warm start (e.g. after a fallback or an episode reset) and the last step's
        state and command, so the next solve does not update the disturbance estimate (the estimate
        itself is kept: `reset_disturbance` clears it)."""
        self._w0: FloatArray | None = None
        self._lam_g = ca.DM.zeros(self.g.shape[0])
        self._lam_x = ca.DM.zeros(self.w.shape[0])
        self._last = None

    def reset_disturbance(self) -> None:
        """Disturbance estimate back to zero, last step and last applied command forgotten (a new episode)."""
        self._d = np.zeros(len(self.disturbance_states))
        self._last = None
        self._applied = None

    @property
    def disturbance(self) -> FloatArray:
        """The current disturbance estimate per state (zeros off the estimated states)."""
        out = np.zeros(self.model.nx)
        out[list(self.disturbance_states)] = self._d
        return out

    def note_applied(self, u: ArrayLike) -> None:
        """The command that actually went out after the last solve, when it was not that solve's
        (a fallback, a safety filter): the next estimate update predicts with it."""
        applied = as_vector(u, self.model.nu, "applied command")
        if self._last is not None:
            self._last = (self._last[0], self._last[1], applied)
        if self.previous_input and self._solve_t is not None:
            self._applied = (self._solve_t, applied.copy())

    def previous_command(self, t: float, u_ref0: FloatArray) -> FloatArray:
        """u_{-1} for a solve at time t (previous_input): the command applied one dt before (half a
        dt of tolerance), else the reference input u_ref0."""
        last = self._applied
        if last is None or abs(t - last[0] - self.cfg.dt) > 0.5 * self.cfg.dt:
            return np.asarray(u_ref0, dtype=np.float64).copy()
        return last[1].copy()

    def _update_disturbance(self, x: FloatArray, t: float) -> None:
        """One filter step from the last step's prediction error (module docstring); skipped when
        the last solve is not exactly one step back (half a dt of tolerance) or the error is not finite."""
        last, self._last = self._last, None
        if last is None or abs(t - last[0] - self.cfg.dt) > 0.5 * self.cfg.dt:
            return
        idx = list(self.disturbance_states)
        prev = [self._last_prev] if self.previous_input else []
        pred = np.asarray(self.step_fn(last[1], last[2], self._theta_dm, *prev), dtype=np.float64).reshape(-1)
        error = x[idx] - pred[idx] - self._d
        if np.all(np.isfinite(error)):
            self._d = self._d + self.cfg.disturbance_gain * error

    def set_residual_weights(self, theta: ArrayLike) -> None:
        """Swap in new residual weights (validated; takes effect at the next solve)."""
        if self.residual is None:
            raise ConfigError("this NMPC has no residual model")
        self.theta = as_vector(theta, self.residual.num_params, "residual weights")
        self._theta_dm = ca.DM(self.theta)

    def _initial_guess(self, x0: FloatArray, u_ref: FloatArray, u_prev: FloatArray | None = None) -> FloatArray:
        """The warm start, or a cold start at x0 and the reference inputs (with previous_input each
        stage's u_prev the input before it: u_prev, default u_ref_0, at stage 0)."""
        n, nx, nu, nz = self.cfg.horizon, self.model.nx, self.model.nu, self.nz
        if self._w0 is not None:
            return self._w0
        w0 = np.zeros(self.w.shape[0])
        for k in range(n):
            w0[k * self.stage : k * self.stage + nx] = x0
            if self.previous_input:
                w0[k * self.stage + nx : k * self.stage + nz] = u_ref[k - 1] if k else (
                    u_ref[0] if u_prev is None else u_prev)
            w0[k * self.stage + nz : k * self.stage + nz + nu] = u_ref[k]
        w0[n * self.stage : n * self.stage + nx] = x0
        if self.previous_input:
            w0[n * self.stage + nx :] = u_ref[n - 1]
        return w0

    def _shift(self, w: FloatArray, lam: ca.DM) -> None:
        """Warm start for the next call: the solution shifted by one stage (last stage repeated)."""
        st, n = self.stage, self.cfg.horizon
        stages = w[: n * st].reshape(n, st)
        x_n = w[n * st :]
        shifted = np.vstack([stages[1:], stages[-1:]])
        shifted[-1, : self.nz] = x_n
        self._w0 = np.concatenate([shifted.reshape(-1), x_n])
        self._lam_g = lam

    def _shift_duals(self, lam_x: ca.DM, lam_g: ca.DM) -> tuple[ca.DM, ca.DM]:
        """The multipliers shifted by one stage as `_shift` shifts w. Rows of g: stage 0 is
        [gap_0, init, path_0], stage k > 0 [gap_k, path_k]; x_0 = x0 (g = x_0 - x0) gets minus the
        old first gap's multiplier (g = x_1 - F(x_0, u_0)): both are the costate of the new x_0."""
        st, n, nx = self.stage, self.cfg.horizon, self.nz  # nz: the stage state, as the gap rows
        lx = np.asarray(lam_x, dtype=np.float64).reshape(-1)
        stages = lx[: n * st].reshape(n, st)
        shifted = np.vstack([stages[1:], stages[-1:]])
        shifted[-1, :nx] = lx[n * st :]
        lg = np.asarray(lam_g, dtype=np.float64).reshape(-1)
        rows = (lg.size - nx) // n  # rows per stage without the init rows
        first, rest = lg[: rows + nx], lg[rows + nx :].reshape(n - 1, rows)
        later = np.vstack([rest[1:], rest[-1:]]) if n > 1 else rest
        head = rest[0] if n > 1 else np.concatenate([first[:nx], first[2 * nx :]])
        new_first = np.concatenate([head[:nx], -first[:nx], head[nx:]])
        new_x = np.concatenate([shifted.reshape(-1), lx[n * st :]])
        return ca.DM(new_x), ca.DM(np.concatenate([new_first, later.reshape(-1)]))

    @staticmethod
    def _infeasibility(linear: float, gap: float) -> str:
        """Why the iterate cannot come from a solved QP ("" if it can); NaN counts as failed."""
        if not linear <= LINEAR_TOL:
            return f"QP failed: linear constraints violated by {linear:.3g}"
        if not gap <= GAP_TOL:
            return f"QP failed: dynamics gap {gap:.3g}"
        return ""

    def _call_nlpsol(self, w0: FloatArray, p: FloatArray) -> _Iterate:
        out = self.solver.call([ca.DM(w0), ca.DM(p), *self._bounds, self._lam_x, self._lam_g])
        stats = self.solver.stats()
        w = np.asarray(out[self._out["x"]], dtype=np.float64).reshape(-1)
        status = str(stats.get("return_status", "unknown"))
        ok = bool(stats.get("success", False)) or (self.cfg.solver.startswith("sqp") and status.lower() in _SQP_OK)
        if ok and np.all(np.isfinite(w)):
            problem = self._infeasibility(*(float(v) for v in self._check(w, p)))
            if problem:
                ok, status = False, f"{status}; {problem}"
        lam_x, lam_g = out[self._out["lam_x"]], out[self._out["lam_g"]]
        return _Iterate(w, lam_x, lam_g, float(out[self._out["f"]]), status, ok, int(stats.get("iter_count", -1)))

    def _call_rti(self, w0: FloatArray, p: FloatArray) -> _Iterate:
        try:
            w, lam_x, lam_g, info = self.solver.call([w0, p, self._lam_x, self._lam_g])
        except RuntimeError as exc:  # e.g. HPIPM refusing NaN bounds
            reason = f"solver error: {str(exc).strip().splitlines()[-1]}"
            return _Iterate(np.full(self.w.shape[0], np.nan), self._lam_x, self._lam_g, float("nan"), reason, False, 0)
        values = info.nonzeros()
        cost, linear, gap = values[:3]
        problem = self._infeasibility(linear, gap)
        if len(values) == 3:
            status = problem or "real-time iteration"
            return _Iterate(w.full().ravel(), lam_x, lam_g, cost, status, not problem, self.cfg.sqp_iterations)
        iterations, norm = int(values[3]), values[4]
        status = problem or ("converged" if norm <= self.cfg.sqp_tol else f"not converged in {iterations} iterations")
        return _Iterate(w.full().ravel(), lam_x, lam_g, cost, status, not problem, iterations, norm)

    def solve(self, x0: ArrayLike, t: float) -> NmpcResult:
        n, nx, nu = self.cfg.horizon, self.model.nx, self.model.nu
        x0v = np.asarray(x0, dtype=np.float64).reshape(-1)
        times = t + self.cfg.dt * np.arange(n + 1)
        x_ref, u_ref = self.task.reference(times)
        estimating = bool(self.disturbance_states)
        update_s = 0.0
        if estimating:  # the estimate's update is part of the controller's time
            start = time.perf_counter()
            self._update_disturbance(x0v, t)
            update_s = time.perf_counter() - start
        parts = [x0v, x_ref.reshape(-1), u_ref[:n].reshape(-1), self.theta, *([self._d] if estimating else [])]
        u_prev = self.previous_command(t, u_ref[0]) if self.previous_input else None
        self._solve_t = float(t)
        if u_prev is not None:
            parts.append(u_prev)
        p = np.concatenate(parts)
        w0 = self._initial_guess(x0v, u_ref, u_prev)
        start = time.perf_counter()
        call = self._call_rti if self.cfg.solver == "rti_hpipm" else self._call_nlpsol
        w, lam_x, lam_g, cost, status, ok, iterations, step_norm = call(w0, p)
        finite = bool(np.all(np.isfinite(w)))
        elapsed = time.perf_counter() - start + update_s  # the check is part of the controller's time
        stages = w[: n * self.stage].reshape(n, self.stage)
        nz = self.nz
        x_pred = np.vstack([stages[:, :nx], w[n * self.stage : n * self.stage + nx][None, :]])
        u_pred = stages[:, nz : nz + nu]
        slack = stages[:, nz + nu :]
        u = np.clip(u_pred[0], self.u_low, self.u_high) if finite else u_pred[0]
        if ok and finite:
            self._shift(w, lam_g)
            self._lam_x = lam_x
            if self.cfg.shift_duals:
                self._lam_x, self._lam_g = self._shift_duals(lam_x, lam_g)
            if estimating:
                self._last = (float(t), x0v.copy(), u.copy())
                if u_prev is not None:
                    self._last_prev = u_prev
            if self.previous_input:
                self._applied = (float(t), u.copy())
        else:
            self.reset()
            self._applied = None  # the fallback's command is not known here (note_applied gives it)
        return NmpcResult(
            u=u,
            x_pred=x_pred,
            u_pred=u_pred,
            success=ok and finite,
            status=status if finite else f"{status} (non-finite solution)",
            iterations=iterations,
            solve_time_s=elapsed,
            cost=cost,
            max_slack=float(slack.max()) if slack.size else 0.0,
            step_norm=step_norm,
            disturbance=self.disturbance,
        )
