"""Nonlinear MPC: tracking, constraints, the learned residual as a parameter, failure reporting."""

from __future__ import annotations

import time

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import SOLVERS, LqrController, Nmpc, NmpcConfig, ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety import make_constraints
from safe_ctrl_ros.tasks import make_task

FIG8 = {"kind": "figure8", "scale": 0.75, "length": 6.0, "plane": "xz", "offset": [0.0, 1.0]}
QUAD_Q = [5.0, 0.1, 5.0, 0.1, 0.1, 0.1]


def track_figure8(solver: str, steps: int = 300) -> tuple[float, int]:
    model = systems.make("quadrotor_2d")
    task = make_task(model, FIG8)
    ctrl = Nmpc(model, task, NmpcConfig(solver=solver, Q=QUAD_Q, R=0.1))
    x = task.reference(0.0)[0][0]
    errors, failures = [], 0
    for k in range(steps):
        result = ctrl.solve(x, k * 0.02)
        failures += not result.success
        x = model.step(x, result.u, 0.02, 10)
        errors.append(np.linalg.norm(x[[0, 2]] - task.reference((k + 1) * 0.02)[0][0][[0, 2]]))
    return float(np.sqrt(np.mean(np.square(errors)))), failures


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_tracks_the_figure8(solver: str) -> None:
    rmse, failures = track_figure8(solver)
    assert failures == 0
    assert rmse < 0.02, rmse


def _ranking_cases() -> list[tuple[str, object, object, object, list[float] | None, int]]:
    pole = {"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2}
    tilt = {"kind": "bounded", "name": "tilt", "active_dims": [4], "lower": -0.07, "upper": 0.07}
    return [  # system, task, Q, constraints, start (None: on the reference), steps
        ("quadrotor_2d", FIG8, QUAD_Q, None, None, 50),
        ("quadrotor_2d", FIG8, QUAD_Q, [tilt], None, 220),  # fatrop fails from step 38, qrqp from 199
        ("cartpole", None, [1.0, 1.0, 10.0, 1.0], [pole], [0.0, 0.0, 0.15, 0.0], 50),
    ]


def test_default_solver_is_the_fastest_that_never_fails() -> None:
    """The default is the solver with the smallest summed median solve time among those that never
    fail, measured here on the code rather than read from a results file (a committed JSON keeps
    passing after a change that makes another solver faster or the default fail). Closed loops of
    the unconstrained figure-8, the figure-8 under the active tilt limit (long enough for sqp_qrqp
    and fatrop to fail; a loop stops at its first failure) and the cart-pole under its pole
    constraints; the median is over the first 50 calls, each timed in thread CPU time, so time the
    scheduler gives to other processes does not count. Each solver's loop runs on its own (warm
    caches, as in bench/mpc_solve.py). The margin: sqp_hpipm, the runner-up among the reliable
    solvers, takes 1.2-1.4x rti_hpipm's instructions per call here (bench/results/mpc_solve.json).
    sqp_qrqp can be as fast as rti_hpipm on the cart-pole but fails under the tilt limit."""
    times: dict[str, list[float]] = {s: [] for s in SOLVERS}
    failed: set[str] = set()
    for system, task_spec, q, cons_spec, x0, steps in _ranking_cases():
        model = systems.make(system)
        task = make_task(model, task_spec)
        cons = make_constraints(cons_spec, model.nx, model.nu) if cons_spec else None
        for solver in SOLVERS:
            ctrl = Nmpc(model, task, NmpcConfig(solver=solver, Q=q, R=0.1), cons)
            x = np.asarray(x0 if x0 is not None else task.reference(0.0)[0][0], dtype=float)
            spent = []
            for k in range(steps):
                start = time.thread_time()
                result = ctrl.solve(x, k * 0.02)
                spent.append(time.thread_time() - start)
                if not result.success:
                    failed.add(solver)
                    break
                x = model.step(x, result.u, 0.02, 10)
            times[solver].append(float(np.median(spent[1:50])))  # the first call sets up the solver
    total = {s: sum(t) for s, t in times.items() if s not in failed}
    assert failed  # the reliability filter is exercised, not vacuous
    assert NmpcConfig().solver == SOLVERS[0] == min(total, key=total.__getitem__), (total, failed)


@pytest.mark.parametrize("scenario", ["figure8", "pole_constraints"])
def test_rti_function_takes_the_same_step_as_sqpmethod(scenario: str) -> None:
    """rti_hpipm is the Gauss-Newton real-time iteration that sqpmethod + HPIPM does with one
    iteration; done in one CasADi function it must give the same commands."""
    if scenario == "figure8":
        model, task_spec, q, cons = systems.make("quadrotor_2d"), FIG8, QUAD_Q, None
        x = make_task(model, task_spec).reference(0.0)[0][0]
    else:
        model, task_spec, q = systems.make("cartpole"), None, [1.0, 1.0, 10.0, 1.0]
        pole = {"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2}
        cons, x = make_constraints([pole], 4, 1), np.array([0.0, 0.0, 0.15, 0.0])
    task = make_task(model, task_spec)
    rti = Nmpc(model, task, NmpcConfig(solver="rti_hpipm", Q=q), cons)
    sqp = Nmpc(model, task, NmpcConfig(solver="sqp_hpipm", Q=q), cons)
    for k in range(60):
        a, b = rti.solve(x, k * 0.02), sqp.solve(x, k * 0.02)
        assert a.success
        assert b.success
        np.testing.assert_allclose(a.u, b.u, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.cost, b.cost, rtol=1e-6)
        x = model.step(x, a.u, 0.02, 10)


def test_state_constraints_hold_where_lqr_violates_them() -> None:
    model = systems.make("cartpole")
    task = make_task(model, None)
    pole = {"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2}
    cons = make_constraints([pole], 4, 1)
    lqr = LqrController(model, [1, 1, 10, 1], 0.1, 0.02)
    nmpc = Nmpc(model, task, NmpcConfig(Q=[1, 1, 10, 1], R=0.1), cons)
    x_lqr = x_mpc = np.array([0.0, 0.0, 0.15, 0.0])
    worst_lqr = worst_mpc = 0.0
    for k in range(250):
        x_lqr = model.step(x_lqr, lqr(x_lqr), 0.02, 10)
        x_mpc = model.step(x_mpc, nmpc.solve(x_mpc, k * 0.02).u, 0.02, 10)
        worst_lqr = max(worst_lqr, np.max(cons.evaluate(x_lqr, [0.0]).values))
        worst_mpc = max(worst_mpc, np.max(cons.evaluate(x_mpc, [0.0]).values))
    assert worst_lqr > 0.1  # LQR swings theta_dot well past 0.2 rad/s
    assert worst_mpc <= 1e-3  # NMPC keeps it (soft constraint: tolerate solver precision)
    assert np.all(np.abs(x_mpc) < 0.05)  # and still balances


def test_zero_residual_is_exactly_the_nominal_controller() -> None:
    model = systems.make("quadrotor_2d")
    task = make_task(model, FIG8)
    spec = ResidualSpec(model.nx, model.nu, hidden=(8, 8))
    nominal = Nmpc(model, task, NmpcConfig(Q=QUAD_Q))
    learned = Nmpc(model, task, NmpcConfig(Q=QUAD_Q), residual=spec)
    learned.set_residual_weights(np.zeros(spec.num_params))
    x = task.reference(0.0)[0][0]
    for k in range(20):
        a, b = nominal.solve(x, k * 0.02), learned.solve(x, k * 0.02)
        np.testing.assert_allclose(b.u, a.u, rtol=0, atol=1e-10)
        x = model.step(x, a.u, 0.02, 10)


def test_residual_weights_change_the_prediction_without_rebuild() -> None:
    model = systems.make("quadrotor_1d")
    task = make_task(model, {"kind": "stabilization", "goal": [1.0, 0.0]})
    spec = ResidualSpec(model.nx, model.nu, hidden=(4,), activation="tanh")
    ctrl = Nmpc(model, task, NmpcConfig(horizon=10), residual=spec)
    solver_before = ctrl.solver
    x = np.array([1.0, 0.0])
    u0 = ctrl.solve(x, 0.0).u
    # A residual that predicts extra downward velocity each step: the controller must push harder.
    layers = spec.unpack(np.zeros(spec.num_params))
    layers[-1][1][1] = -0.01  # output bias on z_dot
    ctrl.reset()
    ctrl.set_residual_weights(spec.pack(layers))
    u1 = ctrl.solve(x, 0.0).u
    assert ctrl.solver is solver_before
    assert u1[0] > u0[0] + 1e-3
    np.testing.assert_allclose(spec.evaluate(x, u1, ctrl.theta)[0], [0.0, -0.01])


def test_residual_symbolic_matches_numpy() -> None:
    import casadi as ca

    spec = ResidualSpec(3, 1, hidden=(5, 4), activation="tanh", in_gain=np.array([1.0, 0.5, 0.0, 2.0]))
    rng = np.random.default_rng(0)
    theta = rng.normal(size=spec.num_params)
    x, u = rng.normal(size=3), rng.normal(size=1)
    xs, us, ts = ca.SX.sym("x", 3), ca.SX.sym("u", 1), ca.SX.sym("t", spec.num_params)
    fn = ca.Function("g", [xs, us, ts], [spec.symbolic(xs, us, ts)])
    np.testing.assert_allclose(np.asarray(fn(x, u, theta)).ravel(), spec.evaluate(x, u, theta)[0], rtol=1e-12)


@pytest.mark.parametrize("solver", ["rti_hpipm", "sqp_hpipm"])
def test_failures_are_reported_not_hidden(solver: str) -> None:
    model = systems.make("cartpole")
    ctrl = Nmpc(model, make_task(model, None), NmpcConfig(horizon=5, solver=solver))
    result = ctrl.solve([0.0, np.nan, 0.1, 0.0], 0.0)
    assert not result.success
    result = ctrl.solve([0.0, 0.0, 0.1, 0.0], 0.02)  # and it recovers by itself
    assert result.success
    assert np.all(np.isfinite(result.u))


def test_bad_configuration_is_named() -> None:
    model = systems.make("cartpole")
    task = make_task(model, None)
    with pytest.raises(ConfigError, match="solver"):
        Nmpc(model, task, NmpcConfig(solver="snopt"))
    with pytest.raises(ConfigError, match="horizon"):
        Nmpc(model, task, NmpcConfig(horizon=0))
    with pytest.raises(ConfigError, match="residual is for"):
        Nmpc(model, task, residual=ResidualSpec(6, 2))
    ctrl = Nmpc(model, task, NmpcConfig(horizon=5), residual=ResidualSpec(4, 1, hidden=(3,)))
    with pytest.raises(ConfigError, match="residual weights"):
        ctrl.set_residual_weights(np.zeros(7))
    with pytest.raises(ConfigError, match="activation"):
        ResidualSpec(4, 1, activation="sigmoid")


def test_rti_iterations_converge_to_the_nlp_solution() -> None:
    """Repeated Gauss-Newton steps of rti_hpipm (sqp_iterations) reach the same optimum as ipopt
    on the same NLP: the QP it builds is the NLP's linearization, constraints active or not."""
    model = systems.make("cartpole")
    task = make_task(model, None)
    pole = {"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2}
    cons = make_constraints([pole], 4, 1)
    cfg = {"Q": [1.0, 1.0, 10.0, 1.0], "R": 0.1, "horizon": 15}
    x0 = np.array([0.0, 0.0, 0.15, 0.25])  # theta_dot starts beyond its bound: the slack is active
    exact = Nmpc(model, task, NmpcConfig(solver="ipopt", **cfg), cons).solve(x0, 0.0)
    one = Nmpc(model, task, NmpcConfig(solver="rti_hpipm", **cfg), cons).solve(x0, 0.0)
    many = Nmpc(model, task, NmpcConfig(solver="rti_hpipm", sqp_iterations=15, **cfg), cons).solve(x0, 0.0)
    assert exact.success
    assert many.success
    assert many.iterations == 15
    np.testing.assert_allclose(many.u_pred, exact.u_pred, atol=1e-4)
    assert np.abs(many.u_pred - exact.u_pred).max() < np.abs(one.u_pred - exact.u_pred).max()


def _pole_case() -> tuple[object, object, object, dict[str, object], np.ndarray]:
    model = systems.make("cartpole")
    task = make_task(model, None)
    pole = {"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2}
    cfg = {"Q": [1.0, 1.0, 10.0, 1.0], "R": 0.1, "horizon": 15}
    return model, task, make_constraints([pole], 4, 1), cfg, np.array([0.0, 0.0, 0.15, 0.25])


def test_gauss_newton_stops_once_converged() -> None:
    """rti_hpipm with sqp_tol iterates until the full step's largest entry is <= sqp_tol, then
    stops paying for QPs: fewer iterations than the cap, the same iterate as taking every step,
    ipopt's optimum; with too small a cap it says it did not converge (and the iterate is still
    usable: the linear constraints hold)."""
    model, task, cons, cfg, x0 = _pole_case()
    exact = Nmpc(model, task, NmpcConfig(solver="ipopt", **cfg), cons).solve(x0, 0.0)
    gn = Nmpc(model, task, NmpcConfig(solver="rti_hpipm", sqp_iterations=30, sqp_tol=1e-10, **cfg), cons).solve(x0, 0.0)
    every = Nmpc(model, task, NmpcConfig(solver="rti_hpipm", sqp_iterations=30, **cfg), cons).solve(x0, 0.0)
    assert gn.success
    assert gn.status == "converged"
    assert 1 < gn.iterations < 30
    assert gn.step_norm <= 1e-10
    np.testing.assert_allclose(gn.u_pred, every.u_pred, rtol=0, atol=1e-9)
    np.testing.assert_allclose(gn.u_pred, exact.u_pred, rtol=0, atol=1e-4)
    capped_cfg = NmpcConfig(solver="rti_hpipm", sqp_iterations=2, sqp_tol=1e-12, **cfg)
    capped = Nmpc(model, task, capped_cfg, cons).solve(x0, 0.0)
    assert capped.success
    assert capped.iterations == 2
    assert capped.status == "not converged in 2 iterations"
    assert capped.step_norm > 1e-12
    assert np.isnan(every.step_norm)  # no tolerance, no step norm reported
    with pytest.raises(ConfigError, match="sqp_tol"):
        NmpcConfig(solver="ipopt", sqp_tol=1e-8).validate()
    with pytest.raises(ConfigError, match="sqp_tol"):
        NmpcConfig(sqp_tol=-1.0).validate()


def test_shifted_duals_follow_the_stages() -> None:
    """shift_duals moves each stage's multipliers one stage forward like the primal warm start:
    rows of stage k take stage k+1's, the last stage keeps its own, and x_0 = x0 takes minus the
    old first gap's (the costate of the new x_0)."""
    model, task, cons, cfg, _ = _pole_case()
    ctrl = Nmpc(model, task, NmpcConfig(shift_duals=True, **cfg), cons)
    nx, n, ns = model.nx, ctrl.cfg.horizon, ctrl.ns
    rows = nx + ns  # per stage: gap, soft rows (no hard rows here); stage 0 also has x_0 = x0
    lam_g = np.arange(ctrl.g.shape[0], dtype=float) + 1.0
    lam_x = np.arange(ctrl.w.shape[0], dtype=float) + 1.0
    new_x, new_g = (np.asarray(v).ravel() for v in ctrl._shift_duals(lam_x, lam_g))
    st = ctrl.stage
    np.testing.assert_array_equal(new_x[: (n - 1) * st], lam_x[st : n * st])
    np.testing.assert_array_equal(new_x[(n - 1) * st : (n - 1) * st + nx], lam_x[n * st :])
    np.testing.assert_array_equal(new_x[n * st :], lam_x[n * st :])
    first = rows + nx
    np.testing.assert_array_equal(new_g[:nx], lam_g[first : first + nx])  # gap_0 <- gap_1
    np.testing.assert_array_equal(new_g[nx : 2 * nx], -lam_g[:nx])  # x_0 = x0 <- -gap_0
    np.testing.assert_array_equal(new_g[2 * nx : first], lam_g[first + nx : first + rows])  # path_0 <- path_1
    np.testing.assert_array_equal(new_g[first : first + (n - 2) * rows], lam_g[first + rows :])
    np.testing.assert_array_equal(new_g[first + (n - 2) * rows :], lam_g[first + (n - 2) * rows :])


def test_ipopt_warm_started_from_shifted_duals_takes_fewer_iterations() -> None:
    """The converged baseline of bench/mpc_solve.py: ipopt from the shifted primal-dual solution
    (warm_start_init_point) gives the same commands as ipopt's default start from the shifted
    primal alone, in fewer iterations (about half on this loop)."""
    model = systems.make("quadrotor_2d")
    task = make_task(model, FIG8)
    tilt = {"kind": "bounded", "name": "tilt", "active_dims": [4], "lower": -0.07, "upper": 0.07}
    cons = make_constraints([tilt], model.nx, model.nu)
    warm = {"ipopt.warm_start_init_point": "yes", "ipopt.mu_init": 1e-4, "ipopt.warm_start_bound_push": 1e-6,
            "ipopt.warm_start_mult_bound_push": 1e-6}
    plain = Nmpc(model, task, NmpcConfig(solver="ipopt", Q=QUAD_Q), cons)
    shifted = Nmpc(model, task, NmpcConfig(solver="ipopt", Q=QUAD_Q, shift_duals=True, solver_options=warm), cons)
    x = task.reference(0.0)[0][0]
    iterations = {"plain": 0, "shifted": 0}
    for k in range(60):
        a, b = plain.solve(x, k * 0.02), shifted.solve(x, k * 0.02)
        assert a.success
        assert b.success
        np.testing.assert_allclose(b.u, a.u, rtol=0, atol=1e-5)
        iterations["plain"] += a.iterations
        iterations["shifted"] += b.iterations
        x = model.step(x, a.u, 0.02, 10)
    assert iterations["shifted"] < 0.8 * iterations["plain"], iterations
