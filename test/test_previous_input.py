"""The residual's previous-command option (ResidualSpec.previous_input: g_theta(x, u, u_prev)):
what it can fit that g(x, u) cannot, the NMPC's prediction with it, the zero-column extension of a
model without it, the model file, the adapter's and the round loop's transitions, the filters'
prediction model; and that with the option off nothing changes."""

from __future__ import annotations

from pathlib import Path

import casadi as ca
import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import Nmpc, NmpcConfig, ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter
from safe_ctrl_ros.learning.data import Batch, normalized_mse, residual_targets
from safe_ctrl_ros.learning.model_file import extend_previous_input, load_model, save_model
from safe_ctrl_ros.learning.rounds import Rounds, Schedule
from safe_ctrl_ros.learning.trainers import Backprop
from safe_ctrl_ros.safety.filters.base import PredictionModel
from safe_ctrl_ros.systems.base import WRENCH_SIZE
from safe_ctrl_ros.tasks import make_task

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
PREV_MODEL = REPO / "config" / "models" / "quadrotor_2d_residual_prev_input.npz"
FIG8 = {"kind": "figure8", "scale": 0.75, "length": 6.0, "plane": "xz", "offset": [0.0, 1.0]}
Q = [5.0, 0.1, 5.0, 0.1, 0.1, 0.1]
DT = 0.02


def lagged_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A lagged toy plant's one-step errors: target = B (u_prev - u), u_prev independent of (x, u)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (n, 6))
    u = rng.uniform(0.1, 0.25, (n, 2))
    u_prev = rng.uniform(0.1, 0.25, (n, 2))
    b = np.array([[0.0, 0.0], [0.02, -0.02], [0.0, 0.0], [0.05, 0.05], [0.0, 0.0], [0.3, -0.3]])
    return x, u, u_prev, (u_prev - u) @ b.T, b


def fit(spec: ResidualSpec, batch: Batch, scale: np.ndarray, steps: int) -> float:
    bp = Backprop(spec, np.random.default_rng(1).normal(0.0, 0.1, spec.num_params), scale, lr=3e-3, seed=0,
                  threads=1)
    order = np.random.default_rng(2)
    for _ in range(steps):
        bp.step(batch.take(order.integers(0, len(batch), 128)))
    return bp.loss(batch)


def test_a_residual_with_the_previous_command_fits_a_lag_that_one_without_cannot() -> None:
    x, u, u_prev, target, b = lagged_data(2000, 0)
    scale = np.maximum(target.std(axis=0), 1e-3)
    gain = [0.0] * 6 + [6.0, 6.0]
    without = ResidualSpec(6, 2, (16, 16), "relu", np.array(gain), scale)
    with_prev = ResidualSpec(6, 2, (16, 16), "relu", np.array([*gain, 6.0, 6.0]), scale, previous_input=True)
    # The best g(x, u) is E[target | u] = B (E u_prev - u): what is left is B (u_prev - E u_prev).
    floor = normalized_mse((u_prev - u_prev.mean(axis=0)) @ b.T, np.zeros_like(target), scale)
    loss_without = fit(without, Batch(x, u, target), scale, 1500)
    loss_with = fit(with_prev, Batch(x, np.hstack([u, u_prev]), target), scale, 1500)
    assert floor > 0.2  # u_prev carries half the spread of the 3 targets that move (of 6 states)
    assert loss_without > 0.9 * floor, (loss_without, floor)
    assert loss_with < 0.05 * floor, (loss_with, floor)


def test_spec_layout_and_the_control_inputs() -> None:
    spec = ResidualSpec(6, 2, (4,), previous_input=True)
    assert spec.layer_sizes == (10, 4, 6)
    assert spec.n_u_in == 4
    assert spec.in_gain.size == 10
    theta = np.random.default_rng(0).normal(size=spec.num_params)
    x, u, up = np.ones(6), np.array([0.1, 0.2]), np.array([0.3, 0.4])
    np.testing.assert_array_equal(spec.evaluate(x, u, theta, up), spec.evaluate(x, np.hstack([u, up]), theta))
    assert not np.allclose(spec.evaluate(x, u, theta, up), spec.evaluate(x, u, theta, u))
    with pytest.raises(ConfigError, match="give u_prev"):
        spec.evaluate(x, u, theta)
    with pytest.raises(ConfigError, match="no previous_input"):
        ResidualSpec(6, 2, (4,)).evaluate(x, u, np.zeros(ResidualSpec(6, 2, (4,)).num_params), up)


def test_zero_column_extension_computes_exactly_the_pretrained_function(tmp_path: Path) -> None:
    start = load_model(MODEL, 6, 2)
    ext = extend_previous_input(start)
    rng = np.random.default_rng(3)
    x, u, up = rng.normal(0, 0.3, (200, 6)), rng.uniform(0, 0.3, (200, 2)), rng.uniform(0, 0.3, (200, 2))
    np.testing.assert_array_equal(ext.net.forward_int(x, np.hstack([u, up])), start.net.forward_int(x, u))
    np.testing.assert_array_equal(ext.net.spec.evaluate(x, u, ext.net.theta(), up), start.net.forward_float(x, u))
    assert ext.net.w[0].dtype == np.int16
    assert not ext.net.w[0][:, 8:].any()
    np.testing.assert_array_equal(ext.net.w[0][:, :8], start.net.w[0])
    # The file records the option; a file without it has no such key (files without it are unchanged).
    save_model(tmp_path / "ext.npz", ext)
    save_model(tmp_path / "plain.npz", start)
    assert "previous_input" in np.load(tmp_path / "ext.npz").files
    assert "previous_input" not in np.load(tmp_path / "plain.npz").files
    back = load_model(tmp_path / "ext.npz", 6, 2)
    assert back.net.spec.previous_input
    assert back.net.spec.layer_sizes == (10, 32, 32, 6)
    np.testing.assert_array_equal(back.net.int_weights(), ext.net.int_weights())
    # The shipped model is that extension of the pretrained one.
    shipped = load_model(PREV_MODEL, 6, 2)
    np.testing.assert_array_equal(shipped.net.int_weights(), ext.net.int_weights())
    np.testing.assert_array_equal(shipped.net.spec.in_gain, ext.net.spec.in_gain)


def test_model_file_with_the_flag_needs_nx_plus_2nu_gains(tmp_path: Path) -> None:
    ext = extend_previous_input(load_model(MODEL, 6, 2))
    save_model(tmp_path / "m.npz", ext)
    data = dict(np.load(tmp_path / "m.npz"))
    data["previous_input"] = np.array(False)  # 10 gains without the flag: nu = 4, not the quadrotor's 2
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(ConfigError, match="nu=4"):
        load_model(tmp_path / "bad.npz", 6, 2)
    data["previous_input"] = np.array(1)
    np.savez(tmp_path / "bad2.npz", **data)
    with pytest.raises(ConfigError, match="previous_input"):
        load_model(tmp_path / "bad2.npz", 6, 2)


def nmpc(spec: ResidualSpec | None, **kw: float) -> Nmpc:
    model = systems.make("quadrotor_2d")
    return Nmpc(model, make_task(model, FIG8), NmpcConfig(Q=Q, R=0.1, **kw), None, spec)  # type: ignore[arg-type]


def test_nmpc_prediction_with_the_previous_command_is_the_residual_rollout() -> None:
    """The NLP's dynamics rows vanish exactly on the rollout x_k+1 = F(x_k, u_k) + g(x_k, u_k, u_k-1)
    with u_-1 the applied command, and on neither other reading of u_prev."""
    spec = ResidualSpec(6, 2, (8,), "relu", np.array([0.0, 1, 0, 1, 1, 1, 6, 6, 6, 6]), np.full(6, 0.02),
                        previous_input=True)
    theta = np.random.default_rng(4).normal(0.0, 0.5, spec.num_params)
    ctrl = nmpc(spec)
    ctrl.set_residual_weights(theta)
    model = systems.make("quadrotor_2d")
    task = make_task(model, FIG8)
    x0 = task.reference(0.0)[0][0]
    first = ctrl.solve(x0, 0.0)
    # The stage-0 parameter: the command the last solve returned, or the one noted as applied.
    x_ref, u_ref = task.reference(DT + DT * np.arange(ctrl.cfg.horizon + 1))
    np.testing.assert_array_equal(ctrl.previous_command(DT, u_ref[0]), first.u)
    applied = np.array([0.21, 0.13])
    ctrl.note_applied(applied)
    np.testing.assert_array_equal(ctrl.previous_command(DT, u_ref[0]), applied)
    np.testing.assert_array_equal(ctrl.previous_command(5.0, u_ref[0]), u_ref[0])  # not one dt back
    n, st = ctrl.cfg.horizon, ctrl.stage
    p = np.concatenate([x0, x_ref.reshape(-1), u_ref[:n].reshape(-1), theta, applied])
    gaps = ca.Function("g", [ctrl.w, ctrl.p], [ctrl.g])
    step = model.rk4_function(DT, 1)
    us = u_ref[:n] + np.random.default_rng(5).normal(0.0, 0.03, (n, 2))

    def w_of(first_prev: np.ndarray, chain: bool) -> np.ndarray:
        w, xk, prev = np.zeros(ctrl.w.shape[0]), x0.copy(), first_prev
        for k in range(n):
            w[k * st : (k + 1) * st] = np.concatenate([xk, prev, us[k]])
            g = spec.evaluate(xk, us[k], theta, prev if chain else us[k])[0]
            xk = np.asarray(step(xk, us[k], np.zeros(WRENCH_SIZE))).reshape(-1) + g
            prev = us[k]
        w[n * st :] = np.concatenate([xk, prev])
        return w

    # Without constraints g is [gap_0 (8), z_0 = [x0; u_-1] (8), gap_1, ..., gap_N-1]: all equalities.
    assert ctrl.g.shape[0] == 8 * (n + 1)
    assert np.abs(np.asarray(gaps(w_of(applied, True), p))).max() < 1e-12
    assert np.abs(np.asarray(gaps(w_of(first.u, True), p))).max() > 1e-4  # another u_-1
    assert np.abs(np.asarray(gaps(w_of(applied, False), p))).max() > 1e-4  # u_prev = u at every stage


def test_nmpc_without_the_option_has_the_same_problem_and_with_zero_columns_the_same_solution() -> None:
    start = load_model(MODEL, 6, 2)
    plain = nmpc(start.net.spec)
    plain.set_residual_weights(start.net.theta())
    model = systems.make("quadrotor_2d")
    nx, nu, n = 6, 2, plain.cfg.horizon
    assert plain.nz == nx
    assert plain.w.shape[0] == n * (nx + nu) + nx
    assert plain.p.shape[0] == nx + nx * (n + 1) + nu * n + start.net.spec.num_params
    ext = extend_previous_input(start)
    prev = nmpc(ext.net.spec)
    prev.set_residual_weights(ext.net.theta())
    assert prev.nz == nx + nu
    assert prev.w.shape[0] == n * (nx + 2 * nu) + nx + nu
    x = make_task(model, FIG8).reference(0.0)[0][0]
    for k in range(5):
        a, b = plain.solve(x, k * DT), prev.solve(x, k * DT)
        assert a.success
        assert b.success
        np.testing.assert_allclose(b.u, a.u, atol=1e-6)
        np.testing.assert_allclose(b.x_pred, a.x_pred, atol=1e-5)
        x = model.step(x, a.u, DT, 10)


def test_nmpc_with_the_option_and_the_disturbance_estimate_updates_with_the_previous_command() -> None:
    spec = ResidualSpec(6, 2, (8,), "relu", np.array([0.0, 1, 0, 1, 1, 1, 6, 6, 6, 6]), np.full(6, 0.02),
                        previous_input=True)
    theta = np.random.default_rng(5).normal(0.0, 0.5, spec.num_params)
    ctrl = nmpc(spec, disturbance_gain=1.0)
    ctrl.set_residual_weights(theta)
    model = systems.make("quadrotor_2d")
    x0 = make_task(model, FIG8).reference(0.0)[0][0]
    first = ctrl.solve(x0, 0.0)
    u_prev0 = make_task(model, FIG8).reference(np.array([0.0]))[1][0]  # no command before: u_ref_0
    x1 = x0 + 0.003
    ctrl.solve(x1, DT)
    step = model.rk4_function(DT, 1)
    pred = np.asarray(step(x0, first.u, np.zeros(WRENCH_SIZE))).reshape(-1)
    pred += spec.evaluate(x0, first.u, theta, u_prev0)[0]
    idx = list(ctrl.disturbance_states)
    np.testing.assert_allclose(ctrl.disturbance[idx], (x1 - pred)[idx], atol=1e-9)  # gain 1: d = the error


def test_adapter_and_rounds_carry_the_previous_command() -> None:
    ext = extend_previous_input(load_model(MODEL, 6, 2))
    nominal = systems.make("quadrotor_2d")
    core = OnlineAdapter(ext, nominal, AdapterConfig(val_every=1000, buffer_size=100))
    x, u, up = np.zeros(6), nominal.equilibrium()[1], np.array([0.3, 0.4])
    xn = x + 1e-4
    assert core.add(x, u, xn, up)
    assert core.add(x, u, xn)
    np.testing.assert_array_equal(core.train_buf.u[:2], [[*u, 0.3, 0.4], [*u, *u]])
    np.testing.assert_allclose(core.train_buf.y[0], residual_targets(nominal, x, u, xn, DT).target[0], atol=1e-12)
    assert core.train_buf.batch().u.shape == (2, 4)
    assert not core.add(x, u, x, np.array([np.nan, 0.0]))
    # Without the option the buffers keep u only and u_prev is ignored.
    plain = OnlineAdapter(load_model(MODEL, 6, 2), nominal, AdapterConfig(val_every=1000, buffer_size=100))
    assert plain.add(x, u, xn, up)
    assert plain.train_buf.u.shape[1] == 2
    # The round loop hands each transition the command one step before, across round boundaries.
    rounds = Rounds(core, Schedule.of(DT, 0.1, 0.0), 1)
    dt_ns = round(DT * 1e9)
    for k in range(12):
        rounds.state(k * dt_ns, np.full(6, float(k)))
        rounds.command(k * dt_ns, np.array([k, -k], dtype=float))
    first = rounds.take()
    assert [nxt // dt_ns for nxt, *_ in first.transitions] == [1, 2, 3, 4, 5]
    assert sorted(first.previous) == [2 * dt_ns, 3 * dt_ns, 4 * dt_ns, 5 * dt_ns]  # step 0 has none
    assert all(np.array_equal(first.previous[nxt], [nxt // dt_ns - 2, 2 - nxt // dt_ns]) for nxt in first.previous)
    rounds.run(first)
    second = rounds.take()
    assert second.transitions[0][0] == 6 * dt_ns
    np.testing.assert_array_equal(second.previous[6 * dt_ns], [4.0, -4.0])


def test_filter_prediction_model_takes_the_previous_command() -> None:
    ext = extend_previous_input(load_model(MODEL, 6, 2))
    spec = ext.net.spec
    theta = np.random.default_rng(6).normal(0.0, 0.1, spec.num_params)
    pm = PredictionModel(systems.make("quadrotor_2d"), DT, 1, spec)
    x, u, up = np.full(6, 0.1), np.array([0.15, 0.2]), np.array([0.3, 0.1])
    nominal = np.asarray(systems.make("quadrotor_2d").rk4_function(DT, 1)(x, u, np.zeros(WRENCH_SIZE))).reshape(-1)
    np.testing.assert_allclose(np.asarray(pm.step_prev(x, u, up, theta)).reshape(-1),
                               nominal + spec.evaluate(x, u, theta, up)[0], atol=1e-12)
    np.testing.assert_allclose(np.asarray(pm.step(x, u, theta)).reshape(-1),
                               nominal + spec.evaluate(x, u, theta, u)[0], atol=1e-12)
    plain = load_model(MODEL, 6, 2)
    pm0 = PredictionModel(systems.make("quadrotor_2d"), DT, 1, plain.net.spec)
    th0 = plain.net.theta()
    np.testing.assert_allclose(np.asarray(pm0.step_prev(x, u, up, th0)), np.asarray(pm0.step(x, u, th0)), atol=0)


def test_pretrain_cli_extends_and_rescales_the_loss_only(tmp_path: Path) -> None:
    from safe_ctrl_ros.learning.pretrain import main

    out = tmp_path / "m.npz"
    assert main(["--extend-previous-input", str(MODEL), "--loss-scale", "5", "20", "--out", str(out)]) == 0
    start, made = load_model(MODEL, 6, 2), load_model(out, 6, 2)
    expected = start.loss_scale.copy()
    expected[5] *= 20.0
    np.testing.assert_array_equal(made.loss_scale, expected)
    np.testing.assert_array_equal(made.net.int_weights(), extend_previous_input(start).net.int_weights())
    # The shipped MuJoCo model is exactly this.
    shipped = load_model(REPO / "config" / "models" / "quadrotor_2d_residual_prev_input_mujoco.npz", 6, 2)
    np.testing.assert_array_equal(shipped.loss_scale, made.loss_scale)
    np.testing.assert_array_equal(shipped.net.int_weights(), made.net.int_weights())
    assert main(["--extend-previous-input", str(MODEL), "--loss-scale", "6", "2", "--out", str(out)]) == 2
