"""The controller's decision logic: fallback on bad state, solver failure and deadline; recovery."""

from __future__ import annotations

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController, Nmpc, NmpcConfig, ResidualSpec
from safe_ctrl_ros.control.residual import dequantize
from safe_ctrl_ros.control.supervisor import FallbackMode, SupervisedController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety import make_constraints
from safe_ctrl_ros.tasks import make_task


def make(nmpc: bool = True, **kwargs: object) -> SupervisedController:
    model = systems.make("cartpole")
    task = make_task(model, None)
    lqr = LqrController(model, [1, 1, 10, 1], 0.1, 0.02)
    mpc = Nmpc(model, task, NmpcConfig(horizon=10, Q=[1, 1, 10, 1])) if nmpc else None
    return SupervisedController(model, task, lqr, mpc, **kwargs)  # type: ignore[arg-type]


def test_primary_law_when_all_is_well() -> None:
    sup = make()
    report = sup.compute([0.0, 0.0, 0.1, 0.0], 0.0)
    assert report.controller == "nmpc"
    assert not report.fallback_active
    assert report.solver == "rti_hpipm"
    assert report.solve_time_s > 0


def test_nan_state_gives_the_safe_command_and_then_recovers() -> None:
    sup = make()
    report = sup.compute([0.0, np.nan, 0.1, 0.0], 0.0)
    assert report.fallback_active
    assert report.fallback_reason == "non-finite or wrong-size state"
    np.testing.assert_array_equal(report.u, [0.0])
    assert not sup.compute([0.0, 0.0, 0.1, 0.0], 0.02).fallback_active
    assert sup.compute([0.0, 0.0], 0.04).fallback_active  # wrong size
    assert sup.fallbacks_total == 2


def test_solver_failure_falls_back_to_lqr_and_the_loop_goes_on() -> None:
    model = systems.make("cartpole")
    task = make_task(model, None)
    # An input constraint that contradicts the input bounds: every QP is infeasible.
    impossible = make_constraints([{"kind": "bounded", "variable": "input", "lower": 20.0, "upper": 30.0}], 4, 1)
    lqr = LqrController(model, [1, 1, 10, 1], 0.1, 0.02)
    sup = SupervisedController(model, task, lqr, Nmpc(model, task, NmpcConfig(horizon=10), impossible))
    x = np.array([0.0, 0.0, 0.1, 0.0])
    for k in range(200):
        report = sup.compute(x, k * 0.02)
        assert report.fallback_active
        assert report.fallback_reason.startswith("solver failed")
        np.testing.assert_allclose(report.u, lqr(x))
        x = model.step(x, report.u, 0.02, 10)
    assert np.all(np.abs(x) < 0.05)  # LQR kept it balanced


def test_deadline_miss_is_a_fallback_for_that_step() -> None:
    sup = make(deadline_s=1e-9)
    report = sup.compute([0.0, 0.0, 0.1, 0.0], 0.0)
    assert report.fallback_active
    assert report.fallback_reason.startswith("deadline missed")
    sup.deadline_s = 0.0
    assert not sup.compute([0.0, 0.0, 0.1, 0.0], 0.02).fallback_active


def test_command_fallback_and_forced_fallback() -> None:
    sup = make(fallback=FallbackMode.COMMAND, safe_command=[1.5])
    report = sup.compute([0.0, 0.0, 0.1, 0.0], 0.0, force_fallback="safety request: pole")
    assert report.fallback_reason == "safety request: pole"
    np.testing.assert_array_equal(report.u, [1.5])
    with pytest.raises(ConfigError, match="outside the input bounds"):
        make(safe_command=[50.0])


def test_lqr_primary_tracks_a_reference() -> None:
    model = systems.make("quadrotor_2d")
    task = make_task(model, {"kind": "circle", "scale": 0.5, "length": 8.0, "plane": "xz", "offset": [0.0, 1.0]})
    lqr = LqrController(model, [5, 0.1, 5, 0.1, 0.1, 0.1], 0.1, 0.02)
    sup = SupervisedController(model, task, lqr)
    x = task.reference(0.0)[0][0]
    errors = []
    for k in range(400):
        x = model.step(x, sup.compute(x, k * 0.02).u, 0.02, 10)
        errors.append(np.linalg.norm(x[[0, 2]] - task.reference((k + 1) * 0.02)[0][0][[0, 2]]))
    assert np.sqrt(np.mean(np.square(errors))) < 0.1


def test_dequantize_checks_every_field() -> None:
    spec = ResidualSpec(4, 1, hidden=(3,))
    n = spec.num_params
    theta = dequantize(spec, [5, 3, 4], "relu", np.arange(n, dtype=np.int16), [0.5, 1.0, 2.0, 4.0])
    np.testing.assert_array_equal(theta[:15], np.arange(15) * 0.5)  # W_1: 3 x 5
    np.testing.assert_array_equal(theta[15:18], np.arange(15, 18) * 1.0)  # b_1
    with pytest.raises(ConfigError, match="layer sizes"):
        dequantize(spec, [5, 4, 4], "relu", np.zeros(n), [1.0] * 4)
    with pytest.raises(ConfigError, match="activation"):
        dequantize(spec, [5, 3, 4], "tanh", np.zeros(n), [1.0] * 4)
    with pytest.raises(ConfigError, match="weights given"):
        dequantize(spec, [5, 3, 4], "relu", np.zeros(n - 1), [1.0] * 4)
    with pytest.raises(ConfigError, match="scales"):
        dequantize(spec, [5, 3, 4], "relu", np.zeros(n), [1.0] * 3)
    with pytest.raises(ConfigError, match="finite"):
        dequantize(spec, [5, 3, 4], "relu", np.zeros(n), [1.0, np.nan, 1.0, 1.0])
