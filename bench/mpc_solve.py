"""NMPC solve cost like for like: real-time iterations against each other, converged solvers against each other.

    tools/run.sh python bench/mpc_solve.py [--scenarios ...] [--steps-scale 1.0] [--no-callgrind]
                                          [--out bench/results/mpc_solve.json]

Two groups; a ratio is only ever taken within one (the summaries' `cross` entries say what they are):
- rti: one Gauss-Newton QP per control step from the shifted previous solution (real-time
  iteration): rti_hpipm (the default; one CasADi function), sqp_hpipm and sqp_qrqp (sqpmethod with
  sqp_iterations = 1, HPIPM or CasADi's active-set qrqp). They solve the same QP; sqpmethod checks
  its tolerances before the QP and returns the warm start unchanged when it already meets them.
- converged: the NLP solved to convergence at every step: rti_hpipm iterated (Gauss-Newton SQP, full
  steps, up to GN_MAX_ITERATIONS, until the step's largest entry is <= GN_TOL), ipopt through nlpsol
  on the Nmpc's NLP, ipopt on the same NLP posed with CasADi Opti (expand=True; detect_simple_bounds
  turns the input and slack bounds, and x_0 = x0, into variable bounds; called through
  opti.to_function, Opti's way for repeated solves; its objective is checked against the Nmpc's),
  and fatrop (as the project configures it). Both ipopt baselines are warm-started with the
  previous primal and dual solution shifted by one stage and IPOPT_WARM's options (the fastest of
  the variants tried, docs/CONTROLLERS.md). Whether they converge: iterations, the Gauss-Newton
  step's norm, ipopt's final max(inf_pr, inf_du), and against ipopt (nlpsol) the closed-loop RMSE
  (within RMSE_REL_TOL) and the command difference at the same states (`replay`).

Scenarios (N = 20, 50 Hz; the plant is the same model with 10 RK4 substeps):
- figure8: the 2D quadrotor tracking safe-control-gym's figure-8 (scale 0.75, 6 s period, x-z plane,
  offset z = 1) from a point on the reference, 12 s; no state constraint;
- figure8_tilt: the same with an active soft tilt limit |theta| <= 0.07 rad;
- pole_constraints: the cart-pole stabilized from 0.15 rad under |theta|, |theta_dot| <= 0.2 (active), 5 s;
- figure8_residual (rti group only): figure8 with the flagship's learned residual (an 8-32-32-6 MLP,
  config/models/quadrotor_2d_residual.npz) inside the prediction;
- hover_3d_wind (rti group only): the 3D quadrotor hovering at (0, 0, 1) m under a 0.025 N wind step
  at 2 s, the 24-row flight envelope as soft constraints, config/quadrotor_3d_hover.yaml's weights, 10 s.

Latency: each closed loop runs once and every step counts once: the wall time of the controller
call (reference sampling, warm start, solve, checks, shift) as a robot would see it, p50 / p99 /
max, the first call (set-up) excluded; also its thread CPU time (cpu_p50_ms, cpu_p99_ms: time the
scheduler gives to other processes not counted). The machine may be shared: provenance and
`load_average` (before and after the timed runs) say how loaded it was.
Instructions: the same controller call counted by callgrind, which does not depend on the load: a
sub-run of the same closed loop (its first `counted_steps`) under valgrind, callgrind collecting
only between two client requests around a counted call and dumping once per call, so every count
is exactly one call; CALLGRIND_WINDOWS windows of CALLGRIND_SOLVES consecutive calls spread over
the sub-run (instrumentation off in between, which runs ~20x faster than instrumented; the call
before each window runs instrumented and is thrown away: the first dump after instrumentation is
switched on is garbage). Records carry the median per call. Solvers whose CPU time p50 is above
`--callgrind-max-ms` are not counted (their ratio to the others is not in doubt).
RMSE is over the model's position entries (`position_indices`: quadrotor x, z; cart-pole x), the
angles apart (`angle_rmse`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import casadi as ca
import numpy as np
import yaml
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import Nmpc, NmpcConfig, ResidualSpec
from safe_ctrl_ros.control.nmpc import _constraint_expr
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.safety import make_constraints
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel
from safe_ctrl_ros.tasks import Task, make_task

REPO = Path(__file__).resolve().parents[1]
DT, N = 0.02, 20
GN_MAX_ITERATIONS, GN_TOL = 30, 1e-8
# ipopt warm-started from the shifted primal-dual solution. Variants tried on the three scenarios
# (docs/CONTROLLERS.md): ipopt's defaults with only the primal warm start, warm_start_init_point with
# mu_init 0.1 / 1e-3 / 1e-4 / 1e-6 and bound pushes 1e-6 / 1e-9; this one was the fastest overall.
IPOPT_WARM = {"warm_start_init_point": "yes", "mu_init": 1e-4, "warm_start_bound_push": 1e-6,
              "warm_start_mult_bound_push": 1e-6}
RMSE_REL_TOL = 1e-3  # converged solvers' closed-loop RMSEs must agree with ipopt's to 0.1%
CALLGRIND_WINDOWS, CALLGRIND_SOLVES = 6, 5

FIG8 = {"kind": "figure8", "scale": 0.75, "length": 6.0, "plane": "xz", "offset": [0.0, 1.0]}
QUAD_Q = [5.0, 0.1, 5.0, 0.1, 0.1, 0.1]
TILT = [{"kind": "bounded", "name": "tilt", "active_dims": [4], "lower": -0.07, "upper": 0.07}]
POLE = [{"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2}]
HOVER = REPO / "config" / "quadrotor_3d_hover.yaml"
RESIDUAL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"


@dataclass(frozen=True)
class Scenario:
    system: str
    task: dict[str, Any] | None
    Q: Any
    R: Any
    steps: int
    groups: tuple[str, ...]
    constraints: Any = None  # a list of constraint specs, or a YAML file with a `constraints` key
    x0: tuple[float, ...] | None = None  # None: the reference at t = 0
    residual: bool = False
    wind: tuple[float, tuple[float, ...]] | None = None  # (start s, world wrench) held from then on
    counted_steps: int = 300  # the callgrind sub-run: the first this many steps of the loop


def _hover() -> dict[str, Any]:
    return yaml.safe_load(HOVER.read_text())["/**/controller"]["ros__parameters"]  # type: ignore[no-any-return]


SCENARIOS: dict[str, Scenario] = {
    # Sub-runs counted by callgrind: one period of the figure-8 (300 steps), the whole cart-pole
    # run, the hover from 2 s before to 3 s after the wind step.
    "figure8": Scenario("quadrotor_2d", FIG8, QUAD_Q, 0.1, 600, ("rti", "converged")),
    "figure8_tilt": Scenario("quadrotor_2d", FIG8, QUAD_Q, 0.1, 600, ("rti", "converged"), TILT),
    "pole_constraints": Scenario("cartpole", None, [1.0, 1.0, 10.0, 1.0], 0.1, 250, ("rti", "converged"), POLE,
                                 x0=(0.0, 0.0, 0.15, 0.0), counted_steps=250),
    "figure8_residual": Scenario("quadrotor_2d", FIG8, QUAD_Q, 0.1, 600, ("rti",), residual=True),
    "hover_3d_wind": Scenario("quadrotor_3d", {"kind": "stabilization", "goal": [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]},
                              "hover:Q", "hover:R", 500, ("rti",),
                              REPO / "config" / "constraints" / "quadrotor_3d_flight.yaml",
                              wind=(2.0, (0.02, 0.015, 0.0, 0.0, 0.0, 0.0)), counted_steps=250),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "rti": ("rti_hpipm", "sqp_hpipm", "sqp_qrqp"),
    "converged": ("rti_hpipm", "ipopt", "opti_ipopt", "fatrop"),
}
REFERENCE = {"rti": "rti_hpipm", "converged": "rti_hpipm"}  # the ratios' denominator in each group
AGREEMENT_REFERENCE = "ipopt"  # the converged closed loops are compared with this one's


# --- the controllers ------------------------------------------------------------------------------
def _weights(scn: Scenario) -> tuple[Any, Any]:
    if scn.Q == "hover:Q":
        hover = _hover()["nmpc"]
        r = hover["R"]
        return hover["Q"], r[0] if isinstance(r, list) and len(r) == 1 else r  # one entry: every input
    return scn.Q, scn.R


def _constraints(scn: Scenario, model: SymbolicModel) -> Any:
    spec = scn.constraints
    if isinstance(spec, Path):
        spec = yaml.safe_load(spec.read_text())["constraints"]
    return make_constraints(spec, model.nx, model.nu)


def _config(group: str, solver: str, scn: Scenario) -> NmpcConfig:
    q, r = _weights(scn)
    base: dict[str, Any] = {"horizon": N, "dt": DT, "Q": q, "R": r}
    if group == "rti":
        return NmpcConfig(solver=solver, **base)
    if solver == "rti_hpipm":
        return NmpcConfig(solver=solver, sqp_iterations=GN_MAX_ITERATIONS, sqp_tol=GN_TOL, **base)
    if solver in ("ipopt", "opti_ipopt"):
        options = {f"ipopt.{k}": v for k, v in IPOPT_WARM.items()}
        return NmpcConfig(solver="ipopt", shift_duals=True, solver_options=options, **base)
    return NmpcConfig(solver=solver, **base)


class OptiIpopt:
    """The Nmpc's NLP posed with CasADi Opti and solved by ipopt, written the way Opti is meant for
    repeated solves: expand=True (SX evaluation), detect_simple_bounds (bounds of single variables
    go to lbx/ubx), one `to_function` call per solve taking the parameters, the primal guess and
    the dual guess, and the previous solution shifted by one stage as the next guess (primal and
    dual, as `Nmpc(shift_duals=True)` does). Variables are declared stage by stage in the Nmpc's
    order [x_0, (u_0, s_0), x_1, ...], so w means the same in both."""

    def __init__(self, ctrl: Nmpc, ipopt_options: dict[str, Any]) -> None:
        self.ctrl, self.model, self.task = ctrl, ctrl.model, ctrl.task
        model, cfg = ctrl.model, ctrl.cfg
        nx, nu, ns, n = model.nx, model.nu, ctrl.ns, cfg.horizon
        opti = ca.Opti()
        self.x0, self.xr, self.ur = opti.parameter(nx), opti.parameter(nx, n + 1), opti.parameter(nu, n)
        xs, vs = [], []
        for _ in range(n):
            xs.append(opti.variable(nx))
            vs.append(opti.variable(nu + ns))
        xs.append(opti.variable(nx))
        theta = ca.DM(ctrl.theta)
        lo = np.concatenate([model.input_bounds[0], np.zeros(ns)])
        hi = np.concatenate([model.input_bounds[1], np.full(ns, np.inf)])
        cost: Any = 0
        self.rows: list[tuple[int, int]] = []  # Opti's rows of each stage's constraints, in order
        for k in range(n):
            first = opti.ng
            u, s = vs[k][:nu], vs[k][nu:]
            e, du = xs[k] - self.xr[:, k], u - self.ur[:, k]
            cost += e.T @ ca.DM(ctrl.Q) @ e + du.T @ ca.DM(ctrl.R) @ du
            if ns:
                cost += cfg.slack_l1 * ca.sum1(s) + cfg.slack_l2 * ca.sumsqr(s)
            opti.subject_to(xs[k + 1] == ctrl.step_fn(xs[k], u, theta))
            if k == 0:
                opti.subject_to(xs[0] == self.x0)
            if ns:
                soft = ca.vertcat(*[_constraint_expr(c, xs[k], u) for c in ctrl.soft])
                opti.subject_to(soft + cfg.constraint_backoff - s <= 0)
            if ctrl.hard:
                opti.subject_to(ca.vertcat(*[_constraint_expr(c, xs[k], u) for c in ctrl.hard]) <= 0)
            opti.subject_to(opti.bounded(lo, vs[k], hi))
            self.rows.append((first, opti.ng))
        e = xs[n] - self.xr[:, n]
        opti.minimize(cost + e.T @ ca.DM(ctrl.P) @ e)
        opti.solver("ipopt", {"expand": True, "detect_simple_bounds": True, "print_time": False},
                    {"print_level": 0, "sb": "yes", "max_iter": 200, **ipopt_options})
        self.fn = opti.to_function("opti_ipopt", [self.x0, self.xr, self.ur, opti.x, opti.lam_g],
                                   [opti.x, opti.lam_g])
        self.nw, self.ng = opti.nx, opti.ng
        self._same_problem(opti)
        self.w0: FloatArray | None = None
        self.lam0 = np.zeros(self.ng)
        self.stats: dict[str, Any] = {}

    def _same_problem(self, opti: ca.Opti) -> None:
        """Refuse to run unless Opti's objective is the Nmpc's at random points (same NLP)."""
        ctrl = self.ctrl
        if self.nw != ctrl.w.shape[0]:
            raise RuntimeError(f"Opti has {self.nw} variables, the Nmpc {ctrl.w.shape[0]}")
        f = ca.Function("f", [opti.x, opti.p], [opti.f])
        rng = np.random.default_rng(0)
        for _ in range(3):
            w, p = rng.normal(size=self.nw), rng.normal(size=opti.np)
            p_full = np.concatenate([p, ctrl.theta])
            a, b = float(f(w, p)), float(ctrl._cost_fn(w, p_full))
            if abs(a - b) > 1e-9 * max(1.0, abs(b)):
                raise RuntimeError(f"Opti's objective {a} differs from the Nmpc's {b}")

    def _shift_duals(self, lam: FloatArray) -> FloatArray:
        """Stage k's rows take stage k+1's multipliers (the last stage keeps its own); x_0 = x0's
        rows (right after stage 0's gap rows) take minus the old first gap's, as in the Nmpc."""
        nx = self.model.nx
        out = lam.copy()
        for k, (a, b) in enumerate(self.rows[:-1]):
            c, d = self.rows[k + 1]
            if k == 0:
                out[a : a + nx] = lam[c : c + nx]
                out[a + nx : a + 2 * nx] = -lam[a : a + nx]
                out[a + 2 * nx : b] = lam[c + nx : d]
            else:
                out[a:b] = lam[c:d]
        return out

    def __call__(self, x: FloatArray, t: float) -> FloatArray:
        n, nx, nu = self.ctrl.cfg.horizon, self.model.nx, self.model.nu
        x_ref, u_ref = self.task.reference(t + DT * np.arange(n + 1))
        if self.w0 is None:
            self.ctrl._w0 = None
            self.w0 = self.ctrl._initial_guess(x, u_ref)  # the Nmpc's cold start
        w_dm, lam_dm = self.fn(x, x_ref.T, u_ref[:n].T, self.w0, self.lam0)
        self.stats = self.fn.stats()
        w = w_dm.full().ravel()
        st = self.ctrl.stage
        u = w[nx : nx + nu]
        if self.stats.get("success", False) and np.all(np.isfinite(w)):
            stages = w[: n * st].reshape(n, st)
            shifted = np.vstack([stages[1:], stages[-1:]])
            shifted[-1, :nx] = w[n * st :]
            self.w0 = np.concatenate([shifted.reshape(-1), w[n * st :]])
            self.lam0 = self._shift_duals(lam_dm.full().ravel())
        else:
            self.w0, self.lam0 = None, np.zeros(self.ng)
        return np.clip(u, *self.model.input_bounds)


def _ipopt_kkt(stats: dict[str, Any]) -> float:
    """ipopt's own final optimality measure: max(inf_pr, inf_du) of its last iteration."""
    it = stats.get("iterations") or {}
    try:
        return float(max(it["inf_pr"][-1], it["inf_du"][-1]))
    except (KeyError, IndexError, TypeError):
        return float("nan")


@dataclass
class Loop:
    """One closed loop's controller and plant."""

    scn: Scenario
    model: SymbolicModel
    task: Task
    law: Callable[[FloatArray, float], FloatArray]
    probe: Callable[[], tuple[bool, int, float]]  # after a call: (ok, iterations, convergence measure)


def make_loop(scenario: str, group: str, solver: str) -> Loop:
    scn = SCENARIOS[scenario]
    model = systems.make(scn.system)
    task = make_task(model, scn.task)
    cons = _constraints(scn, model)
    residual: ResidualSpec | None = None
    theta = None
    if scn.residual:
        start = load_model(RESIDUAL, model.nx, model.nu)
        residual, theta = start.net.spec, start.net.theta()
    cfg = _config(group, solver, scn)
    ctrl = Nmpc(model, task, cfg, cons, residual)
    if theta is not None:
        ctrl.set_residual_weights(theta)
    if solver == "opti_ipopt":
        opti = OptiIpopt(ctrl, IPOPT_WARM)

        def opti_probe() -> tuple[bool, int, float]:
            s = opti.stats
            return bool(s.get("success", False)), int(s.get("iter_count", -1)), _ipopt_kkt(s)

        return Loop(scn, model, task, opti, opti_probe)
    last: list[Any] = [None]

    def law(x: FloatArray, t: float) -> FloatArray:
        result = ctrl.solve(x, t)
        last[0] = result
        return result.u

    def probe() -> tuple[bool, int, float]:
        r = last[0]
        if cfg.solver == "ipopt":
            measure = _ipopt_kkt(ctrl.solver.stats())
        elif cfg.sqp_tol > 0:
            measure = r.step_norm
        else:
            measure = float("nan")
        return bool(r.success), int(r.iterations), measure

    return Loop(scn, model, task, law, probe)


def _start(loop: Loop) -> FloatArray:
    scn = loop.scn
    return np.asarray(scn.x0 if scn.x0 is not None else loop.task.reference(0.0)[0][0], dtype=float)


def _wrench(scn: Scenario, t: float) -> FloatArray | None:
    if scn.wind is None or t < scn.wind[0]:
        return None
    return np.asarray(scn.wind[1], dtype=float)


def steps_of(scenario: str, scale: float) -> int:
    return max(10, int(SCENARIOS[scenario].steps * scale))


def run_loop(loop: Loop, steps: int, around: Callable[[int, Callable[[], FloatArray]], FloatArray] | None = None,
             ) -> dict[str, Any]:
    """The closed loop: per step the wall time of the controller call, the command, the probe."""
    model, task, scn = loop.model, loop.task, loop.scn
    x = _start(loop)
    pos, ang = list(model.position_indices), list(model.angle_indices)
    times, cpu, inputs, oks, iterations, measures, pos_err, ang_err, states = [], [], [], [], [], [], [], [], []
    clock, cpu_clock = time.perf_counter, time.thread_time
    for k in range(steps):
        t = k * DT
        states.append(x)
        if around is None:
            cpu_start = cpu_clock()
            start = clock()
            u = loop.law(x, t)
            times.append(clock() - start)
            cpu.append(cpu_clock() - cpu_start)
        else:
            u = around(k, lambda x=x, t=t: loop.law(x, t))
        ok, its, measure = loop.probe()
        oks.append(ok)
        iterations.append(its)
        measures.append(measure)
        inputs.append(np.asarray(u, dtype=float))
        x = model.step(x, u, DT, 10, _wrench(scn, t))
        ref = task.reference((k + 1) * DT)[0][0]
        pos_err.append(float(np.linalg.norm(x[pos] - ref[pos])))
        ang_err.append(float(np.linalg.norm(x[ang] - ref[ang])) if ang else 0.0)
    return {"times": np.array(times), "cpu": np.array(cpu), "inputs": np.array(inputs), "ok": np.array(oks),
            "states": np.array(states),
            "iterations": np.array(iterations), "measures": np.array(measures, dtype=float),
            "pos_err": np.array(pos_err), "ang_err": np.array(ang_err)}


def _rms(v: FloatArray) -> float:
    return float(np.sqrt(np.mean(np.square(v))))


def replay(scenario: str, solver: str, states: FloatArray, inputs: FloatArray) -> dict[str, float]:
    """A converged solver fed the reference loop's states (its warm start its own previous
    solution): how far its commands are from the reference's at the same state."""
    loop = make_loop(scenario, "converged", solver)
    du = np.array([np.abs(loop.law(x, k * DT) - inputs[k]).max() for k, x in enumerate(states)])
    return {"p50": float(np.median(du)), "p99": float(np.percentile(du, 99)), "max": float(du.max()),
            "at_step": int(du.argmax())}


def latency_record(scenario: str, group: str, solver: str, scale: float) -> tuple[dict[str, Any], dict[str, Any]]:
    loop = make_loop(scenario, group, solver)
    steps = steps_of(scenario, scale)
    out = run_loop(loop, steps)
    ms = out["times"][1:] * 1e3  # the first call builds the solver's workspace
    cpu_ms = out["cpu"][1:] * 1e3
    its = out["iterations"]
    record: dict[str, Any] = {
        "solver": solver, "group": group, "scenario": scenario, "system": loop.scn.system, "horizon": N,
        "steps": steps, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()), "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
        "cpu_p99_ms": float(np.percentile(cpu_ms, 99)), "instructions": None, "rmse": _rms(out["pos_err"]),
        "angle_rmse": _rms(out["ang_err"]) if loop.model.angle_indices else None,
        "failures": int((~out["ok"]).sum()), "iterations_p50": float(np.median(its)), "iterations_max": int(its.max()),
    }
    if group == "converged":
        measures = out["measures"]
        if solver == "rti_hpipm":
            record["convergence"] = "largest entry of the last Gauss-Newton step"
            record["unconverged"] = int(np.sum(~(measures <= GN_TOL)))
            record["tolerance"] = GN_TOL
        elif solver in ("ipopt", "opti_ipopt"):
            record["convergence"] = "ipopt's final max(inf_pr, inf_du)"
            record["unconverged"] = int((~out["ok"]).sum())
            record["tolerance"] = 1e-8  # ipopt's default tol (scaled), the option is left as is
        else:
            record["convergence"] = "fatrop's success flag"
            record["unconverged"] = int((~out["ok"]).sum())
        finite = measures[np.isfinite(measures)]
        record["convergence_worst"] = float(finite.max()) if finite.size else None
    return record, out


# --- instruction counts (callgrind) ----------------------------------------------------------------
MARKER_C = r"""
#include <valgrind/callgrind.h>
void cg_begin(void) { CALLGRIND_TOGGLE_COLLECT; }
void cg_end(const char *label) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(label); }
void cg_on(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_off(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def windows(steps: int) -> list[int]:
    """First counted step of each window, spread over steps 2 .. steps - 1 (step 0 builds)."""
    span = CALLGRIND_SOLVES + 1  # the call before a window switches instrumentation on
    if steps < 2 + CALLGRIND_WINDOWS * span:
        raise ValueError(f"--callgrind-steps must be >= {2 + CALLGRIND_WINDOWS * span}")
    starts = np.linspace(2, steps - CALLGRIND_SOLVES, CALLGRIND_WINDOWS).round().astype(int)
    return [int(s) for s in starts]


def callgrind_child(scenario: str, keys: Sequence[str], steps: int, library: str) -> int:
    """Run under valgrind: each solver's closed loop for `steps` steps, counting the windows."""
    import ctypes

    lib = ctypes.CDLL(library)
    lib.cg_end.argtypes = [ctypes.c_char_p]
    starts = windows(steps)
    counted = {s + i for s in starts for i in range(CALLGRIND_SOLVES)}
    for key in keys:
        group, solver = key.split("/")
        loop = make_loop(scenario, group, solver)

        def around(k: int, call: Callable[[], FloatArray], key: str = key) -> FloatArray:
            warm_up = k + 1 in starts
            if warm_up:
                # The first dump after instrumentation comes back on is garbage (callgrind 3.19
                # reports a negative count): this call's dump takes it and is thrown away.
                lib.cg_on()
            if k not in counted and not warm_up:
                return call()
            lib.cg_begin()
            u = call()
            lib.cg_end(f"{key}/{k}{'/warm-up' if warm_up else ''}".encode())
            if k + 1 not in counted and not warm_up:
                lib.cg_off()
            return u

        run_loop(loop, steps, around)
    return 0


def _dump_counts(folder: Path) -> dict[str, list[int]]:
    """Per label "group/solver": the Ir count of every dump (one counted call each)."""
    counts: dict[str, list[int]] = {}
    for file in folder.iterdir():
        label, total = None, None
        with file.open() as fh:
            for line in fh:
                if line.startswith("desc: Trigger: Client Request: "):
                    label = line.split(": ", 3)[-1].strip()
                elif line.startswith("summary: "):
                    total = int(line.split()[1])
                    break
        if label is None or total is None or label.endswith("/warm-up"):
            continue  # the final dump at exit (trigger "Program termination"), the warm-up calls
        if not 1e3 < total < 1e11:
            raise RuntimeError(f"callgrind count {total} for {label} is not a plausible per-call count")
        group, solver, _step = label.split("/")
        counts.setdefault(f"{group}/{solver}", []).append(total)
    return counts


def callgrind_tools() -> str:
    """Why callgrind cannot run here ("" if it can)."""
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if not Path("/usr/include/valgrind/callgrind.h").is_file():
        return "valgrind/callgrind.h not found (valgrind's development headers)"
    return ""


def count_instructions(scenario: str, keys: Sequence[str], steps: int) -> dict[str, list[int]]:
    with tempfile.TemporaryDirectory(prefix="mpc_solve_cg_") as tmp:
        folder = Path(tmp)
        src, lib = folder / "marker.c", folder / "libmarker.so"
        src.write_text(MARKER_C)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
        dumps = folder / "dumps"
        dumps.mkdir()
        cmd = [
            "valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no", "--collect-atstart=no",
            "--dump-instr=no", "--dump-line=no", f"--callgrind-out-file={dumps}/cg.%p",
            sys.executable, str(Path(__file__).resolve()), "--callgrind-child", scenario, "--callgrind-steps",
            str(steps), "--callgrind-keys", ",".join(keys), "--callgrind-library", str(lib),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return _dump_counts(dumps)


def valgrind_version() -> str:
    try:
        return subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- summaries ------------------------------------------------------------------------------------
def _find(records: list[dict[str, Any]], group: str, scenario: str, solver: str) -> dict[str, Any] | None:
    hits = [r for r in records if (r["group"], r["scenario"], r["solver"]) == (group, scenario, solver)]
    return hits[0] if hits else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def ratio_entry(group: str, scenario: str, solver: str, vs: str, a: dict[str, Any], b: dict[str, Any],
                what: str) -> dict[str, Any]:
    return {
        "group": group, "scenario": scenario, "solver": solver, "vs": vs, "what": what,
        "p50_ratio": _ratio(a["p50_ms"], b["p50_ms"]), "p99_ratio": _ratio(a["p99_ms"], b["p99_ms"]),
        "cpu_p50_ratio": _ratio(a["cpu_p50_ms"], b["cpu_p50_ms"]),
        "instructions_ratio": _ratio(a["instructions"], b["instructions"]),
    }


SameState = dict[tuple[str, str], dict[str, float]]


def summaries(records: list[dict[str, Any]], same_state: SameState) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for scenario, scn in SCENARIOS.items():
        for group in scn.groups:
            ref_name = REFERENCE[group]
            ref = _find(records, group, scenario, ref_name)
            if ref is None:
                continue
            for solver in GROUPS[group]:
                r = _find(records, group, scenario, solver)
                if r is None or solver == ref_name:
                    continue
                what = ("both one real-time iteration (one QP per step)" if group == "rti"
                        else "both solve the NLP to convergence every step")
                out.append(ratio_entry(group, scenario, solver, ref_name, r, ref, what))
        if "converged" in scn.groups:
            a, b = _find(records, "converged", scenario, "opti_ipopt"), _find(records, "converged", scenario, "ipopt")
            if a is not None and b is not None:
                out.append(ratio_entry("converged", scenario, "opti_ipopt", "ipopt", a, b,
                                       "the same NLP and ipopt options through Opti and through nlpsol"))
            rti = _find(records, "rti", scenario, "rti_hpipm")
            if a is not None and rti is not None:
                entry = ratio_entry("cross", scenario, "opti_ipopt", "rti_hpipm", a, rti,
                                    "one real-time iteration (rti group) vs the NLP solved to convergence by "
                                    "ipopt through Opti (converged group): different amounts of work")
                entry["solver_group"], entry["vs_group"] = "converged", "rti"
                out.append(entry)
            if _find(records, "converged", scenario, AGREEMENT_REFERENCE) is not None:
                out.append(agreement(records, same_state, scenario))
    return out


def agreement(records: list[dict[str, Any]], same_state: dict[tuple[str, str], dict[str, float]],
              scenario: str) -> dict[str, Any]:
    """Do the converged solvers solve the same problem to the same answer? Against ipopt
    (nlpsol): the relative difference of the closed-loop RMSEs (each its own loop; must be within
    RMSE_REL_TOL, with no unconverged solve) and the command difference at the same states
    (`replay`: p50 / p99 / max over the run, N; reported, no threshold: a nonconvex NLP may have
    more than one local solution, and solvers may pick different ones)."""
    ref = _find(records, "converged", scenario, AGREEMENT_REFERENCE)
    assert ref is not None
    entry: dict[str, Any] = {"group": "converged", "scenario": scenario, "check": "agreement",
                             "vs": AGREEMENT_REFERENCE, "rmse_rel_tol": RMSE_REL_TOL, "solvers": {}}
    for solver in GROUPS["converged"]:
        r = _find(records, "converged", scenario, solver)
        if r is None or solver == AGREEMENT_REFERENCE:
            continue
        rel = abs(r["rmse"] - ref["rmse"]) / ref["rmse"]
        ok = rel <= RMSE_REL_TOL and r["unconverged"] == 0
        entry["solvers"][solver] = {"rmse_rel_difference": rel, "unconverged": r["unconverged"], "agrees": ok,
                                    "same_state_input_difference": same_state.get((scenario, solver))}
    entry["agreeing"] = [s for s, v in entry["solvers"].items() if v["agrees"]]
    entry["not_agreeing"] = [s for s, v in entry["solvers"].items() if not v["agrees"]]
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-scale", type=float, default=1.0, help="shorten the closed loops (smoke tests)")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--callgrind-steps", type=int, default=None,
                        help="length of the counted sub-run (default: each scenario's counted_steps)")
    parser.add_argument("--callgrind-max-ms", type=float, default=20.0,
                        help="do not count solvers whose CPU time p50 is above this (ms)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mpc_solve.json")
    parser.add_argument("--callgrind-child", help=argparse.SUPPRESS)
    parser.add_argument("--callgrind-keys", help=argparse.SUPPRESS)
    parser.add_argument("--callgrind-library", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind_child:
        return callgrind_child(args.callgrind_child, args.callgrind_keys.split(","), args.callgrind_steps,
                               args.callgrind_library)

    records: list[dict[str, Any]] = []
    same_state: dict[tuple[str, str], dict[str, float]] = {}
    load_before = [round(v, 2) for v in os.getloadavg()]
    print(f"{'group':<10}{'scenario':<18}{'solver':<12}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'rmse':>9}"
          f"{'fails':>6}{'iters':>7}")
    for scenario in args.scenarios:
        for group in SCENARIOS[scenario].groups:
            loops = {}
            for solver in GROUPS[group]:
                r, loops[solver] = latency_record(scenario, group, solver, args.steps_scale)
                records.append(r)
                print(f"{group:<10}{scenario:<18}{solver:<12}{r['p50_ms']:>8.3f}{r['p99_ms']:>8.3f}{r['max_ms']:>8.2f}"
                      f"{r['rmse']:>9.4f}{r['failures']:>6}{r['iterations_p50']:>7.1f}", flush=True)
            if group == "converged":
                ref = loops[AGREEMENT_REFERENCE]
                for solver in GROUPS[group]:
                    if solver != AGREEMENT_REFERENCE:
                        same_state[(scenario, solver)] = replay(scenario, solver, ref["states"], ref["inputs"])
    load_after = [round(v, 2) for v in os.getloadavg()]

    why_not = "skipped (--no-callgrind)" if args.no_callgrind else callgrind_tools()
    callgrind: dict[str, Any] = {
        "method": (f"valgrind --tool=callgrind on a sub-run of the same closed loop (its first `sub_run_steps` "
                   f"steps); callgrind collects only between client requests around each counted controller "
                   f"call and dumps once per call; {CALLGRIND_WINDOWS} windows of {CALLGRIND_SOLVES} consecutive "
                   f"calls spread over the sub-run (instrumentation off in between; the call before each window "
                   f"runs instrumented and is not counted); `instructions` is the median per call (Ir), "
                   f"`instructions_range` the smallest and largest"),
        "sub_run_steps": {s: min(args.callgrind_steps or SCENARIOS[s].counted_steps, steps_of(s, 1.0))
                          for s in args.scenarios}, "windows": CALLGRIND_WINDOWS, "calls_per_window": CALLGRIND_SOLVES,
        "max_cpu_p50_ms": args.callgrind_max_ms, "skipped": why_not or None,
        "note": ("counts are of valgrind's virtual CPU (no AVX-512), so libraries that dispatch on the CPU may "
                 "run other code paths than natively; they are exact and repeatable for the code that runs"),
    }
    if not why_not:
        callgrind["valgrind"] = valgrind_version()
        for scenario in args.scenarios:
            steps = min(args.callgrind_steps or SCENARIOS[scenario].counted_steps, steps_of(scenario, 1.0))
            keys = [f"{r['group']}/{r['solver']}" for r in records
                    if r["scenario"] == scenario and r["cpu_p50_ms"] <= args.callgrind_max_ms]
            started = time.perf_counter()
            counts = count_instructions(scenario, keys, steps)
            for r in records:
                c = counts.get(f"{r['group']}/{r['solver']}") if r["scenario"] == scenario else None
                if c:
                    r["instructions"] = int(np.median(c))
                    r["instructions_range"] = [int(min(c)), int(max(c))]
                    r["instruction_samples"] = len(c)
                elif r["scenario"] == scenario:
                    r["instructions_note"] = f"not counted: CPU p50 above {args.callgrind_max_ms:g} ms"
            print(f"callgrind {scenario}: {len(keys)} solvers in {time.perf_counter() - started:.0f} s", flush=True)
    sums = summaries(records, same_state)
    for s in sums:
        if s.get("check") == "agreement":
            print(f"{s['scenario']}: agree with {s['vs']}: {s.get('agreeing')}, not: {s.get('not_agreeing')} "
                  + json.dumps(s["solvers"]))
        else:
            ins = s["instructions_ratio"]
            print(f"{s['group']:<10}{s['scenario']:<18}{s['solver']} / {s['vs']}: p50 {s['p50_ratio']:.2f}x, "
                  f"p99 {s['p99_ratio']:.2f}x, instructions {'-' if ins is None else f'{ins:.2f}x'}")
    write_records(
        args.out, records,
        rule=("Latency: one closed-loop run per solver, every step counted once (first call excluded), wall time "
              "of the controller call on a possibly shared machine (load_average). Ratios only within a group "
              "(rti: one QP per step; converged: NLP solved to convergence), except the `cross` summary."),
        load_average={"before": load_before, "after": load_after},
        settings={"horizon": N, "dt": DT, "gn_max_iterations": GN_MAX_ITERATIONS, "gn_tol": GN_TOL,
                  "ipopt_warm_start": IPOPT_WARM, "rmse_rel_tol": RMSE_REL_TOL},
        callgrind=callgrind,
        summaries=sums,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
