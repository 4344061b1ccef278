"""The checks before a model version goes out (safe_ctrl_ros.learning.validation) and the verified
rollback (OnlineAdapter.rollback), on transitions of the 30% heavier 2D quadrotor."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter, Version
from safe_ctrl_ros.learning.data import Ring
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.model_file import ResidualModel, load_model
from safe_ctrl_ros.learning.rounds import REJECTED, Rounds, Schedule, Taken
from safe_ctrl_ros.learning.settings import adapter_settings
from safe_ctrl_ros.learning.validation import JACOBIAN, ROLLOUT, CheckConfig, CheckResult, jacobian_norms
from safe_ctrl_ros.simulation import PlantSim
from safe_ctrl_ros.systems.base import FloatArray

MODEL = Path(__file__).resolve().parents[1] / "config" / "models" / "quadrotor_2d_residual.npz"
DT = 0.02


@pytest.fixture(scope="module")
def start() -> ResidualModel:
    return load_model(MODEL, 6, 2)


@pytest.fixture(scope="module")
def flight() -> list[tuple[FloatArray, FloatArray, FloatArray]]:
    """300 contiguous transitions near hover of the 30% heavier plant, seeded random commands."""
    nominal = systems.make("quadrotor_2d")
    plant = PlantSim(systems.make("quadrotor_2d", mass=nominal.params["mass"] * 1.3), DT, 10)
    x0, u0 = nominal.equilibrium()
    plant.reset(np.asarray(x0, dtype=np.float64) + np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    rng = np.random.default_rng(11)
    out = []
    for _ in range(300):
        x = plant.x.copy()
        # thrust for the heavier weight, a little attitude feedback so it stays near hover
        u = 1.3 * np.asarray(u0) + np.array([1, -1]) * (0.02 * x[4] + 0.005 * x[5]) + 0.003 * rng.standard_normal(2)
        out.append((x, u, plant.advance(u)))
    return out


def zeroed(net: QuantizedMLP) -> QuantizedMLP:
    """The same network with every weight 0 (g = 0: the nominal model)."""
    out = net.copy()
    for t in out.tensors():
        t[...] = 0
    return out


def adapter_with(start: ResidualModel, flight: list[tuple[FloatArray, FloatArray, FloatArray]],
                 checks: CheckConfig) -> OnlineAdapter:
    """An adapter fed `flight`, whose model in force is g = 0 and whose trained weights are the
    pretrained residual's (better on this mass mismatch): its candidate passes the validation guard."""
    core = OnlineAdapter(start, systems.make("quadrotor_2d"), AdapterConfig(method="qzo_ff", checks=checks))
    core.start_net = zeroed(start.net)
    for x, u, xn in flight:
        assert core.add(x, u, xn)
    assert core.ready
    return core


def test_jacobian_norms_match_finite_differences(start: ResidualModel,
                                                 flight: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    spec, theta = start.net.spec, start.net.theta()
    x = np.array([f[0] for f in flight[::50]])
    u = np.array([f[1] for f in flight[::50]])
    norms = jacobian_norms(spec, theta, x, u)
    h = 1e-6
    for i in range(x.shape[0]):
        xu = np.concatenate([x[i], u[i]])
        cols = []
        for j in range(xu.size):
            plus, minus = xu.copy(), xu.copy()
            plus[j] += h
            minus[j] -= h
            cols.append((spec.evaluate(plus[:6], plus[6:], theta) - spec.evaluate(minus[:6], minus[6:], theta))[0]
                        / (2 * h))
        assert norms[i] == pytest.approx(float(np.linalg.norm(np.array(cols).T)), rel=1e-5)


def test_the_model_in_force_passes_against_itself(start: ResidualModel,
                                                  flight: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    core = adapter_with(start, flight, CheckConfig(jacobian_factor=1.0))
    result = core.checker.check(start.net.theta(), start.net.theta(), core.recent)
    assert result.passed
    assert result.rollout == result.rollout_ref
    assert result.jacobian == result.jacobian_ref
    # a start every 5 steps among the 100 transitions before the newest 20
    assert result.rollouts == 20


def test_a_candidate_that_predicts_worse_over_the_horizon_fails(
        start: ResidualModel, flight: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    """The pretrained residual with its output 4x: worse over 20 steps than the residual itself,
    and with 4x its Jacobians."""
    core = adapter_with(start, flight, CheckConfig(rollout_factor=1.0, jacobian_factor=2.0))
    theta = start.net.theta()
    loud = theta.copy()
    last = start.net.spec.shapes[-1]
    loud[-(last[0] * last[1] + last[0]):] *= 4.0
    result = core.checker.check(loud, theta, core.recent)
    assert result.failed == (ROLLOUT, JACOBIAN)
    assert result.rollout > 2 * result.rollout_ref
    assert result.jacobian == pytest.approx(4.0 * result.jacobian_ref)
    only_limit = replace(core.cfg.checks, rollout_factor=0.0, jacobian_factor=0.0,
                         jacobian_limit=0.5 * (result.jacobian + result.jacobian_ref))
    core.checker.cfg = only_limit
    assert core.checker.check(loud, theta, core.recent).failed == (JACOBIAN,)
    assert core.checker.check(theta, theta, core.recent).passed


def test_rollouts_do_not_cross_a_missing_step(start: ResidualModel,
                                              flight: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    core = adapter_with(start, flight[:200], CheckConfig())
    recent = Ring(121, 6, 2)  # y: the next state
    kept = flight[80:150] + flight[151:201]  # step 150 never came: transition 70 of the record is missing after it
    for x, u, xn in kept:
        recent.add(x, u, xn)
    x, _, xn = recent.ordered()
    offsets, starts = core.checker.starts(x, xn)
    assert np.count_nonzero(np.any(offsets != 0, axis=1)) == 1  # contiguous elsewhere: exactly zero offsets
    # windows [s, s + 20) covering the break at 69 are left out
    assert starts == [s for s in range(0, 100, 5) if not s <= 69 < s + 20]


def test_a_failed_candidate_is_not_published_and_is_counted(
        start: ResidualModel, flight: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    passing = adapter_with(start, flight, CheckConfig(rollout_factor=1.0))
    version = passing.propose()
    assert version is not None
    assert version.verified
    assert version.checks is not None
    assert version.checks.rollout < version.checks.rollout_ref
    assert passing.verified_versions == [0, 1]

    failing = adapter_with(start, flight, CheckConfig(rollout_factor=1e-6))  # no candidate is that good
    assert failing.propose() is None
    assert failing.rejected_by == ROLLOUT
    assert failing.failed_checks == {ROLLOUT: 1, JACOBIAN: 0}
    assert failing.history == []
    assert failing.verified_versions == [0]


def test_a_round_reports_the_failed_check(start: ResidualModel,
                                          flight: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    core = adapter_with(start, flight, CheckConfig(rollout_factor=1e-6))
    core.cfg = replace(core.cfg, trainer=replace(core.cfg.trainer, lr=1e-9))  # training leaves the weights
    core.trainer = core._make_trainer()
    rounds = Rounds(core, Schedule.of(DT, 0.5, 0.5), steps_per_round=1)
    rounds.state(0, flight[0][0])
    assert rounds.data_end is not None
    result = rounds.run(Taken(rounds.data_end))
    assert result.outcome == REJECTED
    assert result.checks_failed == (ROLLOUT,)
    assert not result.changes_model
    assert "failed the rollout check" in result.detail
    assert "failed checks so far: rollout 1, jacobian 0" in result.detail


def test_rollback_goes_to_a_verified_version(start: ResidualModel,
                                             flight: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    core = adapter_with(start, flight, CheckConfig())
    ok = CheckResult(1.0, 2.0, 0.5, 0.5, 20, ())
    failed = replace(ok, failed=(ROLLOUT,))
    core.history = [Version(1, start.net.copy(), 0.1, ok), Version(2, start.net.copy(), 0.1, None),
                    Version(3, start.net.copy(), 0.1, failed), Version(4, start.net.copy(), 0.1, ok)]
    assert core.verified_versions == [0, 1, 4]
    back = core.rollback()  # from v4: v3 failed its checks and v2 was published without them
    assert back is not None
    assert back.number == 1
    assert [v.number for v in core.history] == [1]
    assert core.rollback() is None
    assert core.reference() is core.start_net


def test_check_settings() -> None:
    cfg = adapter_settings({"check.horizon": 10, "check.rollout_factor": 1.5, "check.jacobian_limit": 2.0}).config
    assert cfg.checks == CheckConfig(horizon=10, rollout_factor=1.5, jacobian_limit=2.0)
    with pytest.raises(ConfigError, match=r"check\.rollout_factor"):
        adapter_settings({"check.rollout_factor": -1.0})
    with pytest.raises(ConfigError, match="window"):
        CheckConfig(window=0).validate()
