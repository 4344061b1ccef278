"""The safety filters' cores (safe_ctrl_ros.safety.filters): CBF-QP and MPSC, without ROS.

What is checked: a proposal that keeps the constraints passes bit for bit; an adversarial controller
(always full force towards a limit) never drives the closed loop out of the constraints under a
disturbance within the designed bound, with either filter; the relative degrees the CBF reads off the
model; MPSC's fallback applies the certified backup with its tube feedback and says so; bad input gets
the documented fallback; the settings builder names unknown settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety import load_constraints, make_constraints
from safe_ctrl_ros.safety.filters import CbfConfig, CbfFilter, Margins, MpscConfig, MpscFilter, PassThrough
from safe_ctrl_ros.safety.filters.settings import build_filter
from safe_ctrl_ros.simulation import PlantSim

CARTPOLE = systems.make("cartpole")
REPO = Path(__file__).resolve().parents[1]
DT = 0.02
W = 0.05  # N: the disturbance bound the filters are built for in these tests
BW = 1e-4


def _pole() -> Any:
    return load_constraints(REPO / "config/constraints/cartpole_pole.yaml", 4, 1)


def _cbf() -> CbfFilter:
    return CbfFilter(CARTPOLE, DT, _pole(), CbfConfig(), Margins(disturbance=np.array([W, 0, 0, 0, 0, 0])),
                     substeps=2)


def _mpsc() -> MpscFilter:
    cfg = MpscConfig(horizon=30, terminal_scale=1.0, Q_lqr=[1.0, 1.0, 10.0, 10.0], R_lqr=[0.01], backup_weight=BW)
    return MpscFilter(CARTPOLE, DT, _pole(), cfg, Margins(disturbance=np.array([W, 0, 0, 0, 0, 0])), substeps=2)


def test_cbf_relative_degrees_follow_the_model() -> None:
    # theta has relative degree two, theta_dot one (rows: lower theta, lower theta_dot, upper ...)
    assert _cbf().degrees == [2, 1, 2, 1]
    quad = systems.make("quadrotor_2d")
    cons = load_constraints(REPO / "config/constraints/quadrotor_2d_flight.yaml", 6, 2)
    assert CbfFilter(quad, DT, cons).degrees == [2, 2, 2, 2]  # altitude and pitch: positions and angles
    rate = make_constraints([{"kind": "bounded", "active_dims": [5], "lower": -1.0, "upper": 1.0}], 6, 2)
    assert CbfFilter(quad, DT, rate).degrees == [1, 1]  # the pitch rate: the input acts on it directly


@pytest.mark.parametrize("make", [_cbf, _mpsc])
def test_a_safe_proposal_passes_unchanged(make: Any) -> None:
    f = make()
    x, u = np.zeros(4), np.array([0.3])
    u_safe, rep = f.filter(x, u, 0.0)
    assert u_safe.tolist() == u.tolist()
    assert rep.intervened is False
    assert rep.intervention == 0.0
    assert rep.infeasible is False
    assert rep.u_proposed.tolist() == [0.3]


def test_cbf_cuts_a_proposal_that_would_break_the_rate_limit() -> None:
    f = _cbf()
    x = np.array([0.0, 0.0, 0.0, 0.15])
    u_safe, rep = f.filter(x, np.array([-10.0]), 0.0)  # full force left: the pole rotates faster
    assert rep.intervened is True
    assert rep.infeasible is False
    assert rep.intervention == pytest.approx(abs(u_safe[0] + 10.0))
    assert "pole[1]_upper" in rep.active  # theta_dot's upper row is the one that binds
    # the certified command keeps theta_dot's barrier condition on the nominal prediction
    x1 = CARTPOLE.step(x, u_safe, DT, 2)
    assert x1[3] < 0.2


@pytest.mark.parametrize("make", [_cbf, _mpsc])
def test_an_adversarial_controller_never_leaves_the_constraints(make: Any) -> None:
    """Always full force, switching direction every second, with a random push within the bound."""
    f = make()
    plant = PlantSim(CARTPOLE, DT, 10)
    plant.reset(np.zeros(4))
    cons = _pole()
    rng = np.random.default_rng(0)
    violations = infeasible = 0
    for k in range(300):
        u_prop = np.array([10.0 if (k // 50) % 2 == 0 else -10.0])
        u_safe, rep = f.filter(plant.x, u_prop, k * DT)
        infeasible += rep.infeasible
        plant.wrench = np.array([rng.uniform(-W, W), 0, 0, 0, 0, 0])
        x = plant.advance(u_safe)
        violations += cons.evaluate(x, u_safe).any_violated
    assert violations == 0
    assert f.interventions > 100  # it did have to act
    assert infeasible == f.infeasible_steps


def test_without_a_filter_the_same_controller_violates() -> None:
    plant = PlantSim(CARTPOLE, DT, 10)
    plant.reset(np.zeros(4))
    cons = _pole()
    f = PassThrough()
    violations = 0
    for k in range(100):
        u_safe, rep = f.filter(plant.x, np.array([10.0]), k * DT)
        assert rep.intervened is False
        violations += cons.evaluate(plant.advance(u_safe), u_safe).any_violated
    assert violations > 50


def test_mpsc_falls_back_to_the_certified_backup_with_its_feedback() -> None:
    f = _mpsc()
    x = np.array([0.0, 0.0, 0.02, 0.0])
    _, rep = f.filter(x, np.array([0.0]), 0.0)
    assert rep.infeasible is False
    backup, backup_x = f._backup.copy(), f._backup_x.copy()  # type: ignore[union-attr]
    x1 = np.array([0.001, 0.01, 0.021, 0.01])

    def broken(*_: Any) -> Any:
        n = f.cfg.horizon
        return np.full(n, np.nan), np.full(1, np.nan), np.full(3, np.nan), np.full((4, n + 1), np.nan)

    f._solve = broken  # type: ignore[method-assign,assignment]
    u1, rep1 = f.filter(x1, np.array([5.0]), DT)
    assert rep1.infeasible is True
    assert rep1.fallback == f"QP failed: certified backup input 1 of {f.cfg.horizon - 1}"
    expected = np.clip(backup[0] - f.K @ (x1 - backup_x[0]), -10.0, 10.0)
    assert u1 == pytest.approx(expected, abs=1e-12)
    assert f.infeasible_steps == 1


def test_mpsc_reports_when_nothing_can_be_certified() -> None:
    f = _mpsc()
    x = np.array([0.0, 0.0, 0.19, 0.6])  # theta_dot far beyond its limit: no plan keeps the rows
    u, rep = f.filter(x, np.array([0.0]), 0.0)
    assert rep.infeasible is True
    assert rep.fallback.endswith("terminal LQR law")  # no certified backup yet
    assert u == pytest.approx(np.clip(-f.K @ (x - np.array([0.0, 0, 0, 0])), -10, 10), abs=1e-12)


@pytest.mark.parametrize("make", [_cbf, _mpsc])
def test_bad_input_gets_the_documented_fallback(make: Any) -> None:
    f = make()
    u, rep = f.filter(np.array([np.nan, 0, 0, 0]), np.array([1.0]), 0.0)
    assert rep.infeasible is True
    assert "non-finite or wrong-size state" in rep.fallback
    assert np.all(np.isfinite(u))
    u, rep = f.filter(np.zeros(4), np.array([1.0, 2.0]), 0.0)
    assert rep.infeasible is True
    assert "proposed command has 2 entries, expected 1" in rep.fallback
    assert np.all(np.isfinite(u))


def test_settings_name_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match=r"unknown name\(s\) \['cbf.gama'\]"):
        build_filter({"filter": "cbf", "cbf.gama": 0.5}, CARTPOLE, _pole())
    with pytest.raises(ConfigError, match="cbf gamma must be in"):
        build_filter({"filter": "cbf", "cbf.gamma": 1.5}, CARTPOLE, _pole())
    with pytest.raises(ConfigError, match="filter model_error: expected a vector of size 4"):
        build_filter({"filter": "mpsc", "model_error": [0.1]}, CARTPOLE, _pole())
    assert isinstance(build_filter({"filter": "none"}, CARTPOLE, _pole()), PassThrough)


QUAD = systems.make("quadrotor_2d")


def _sinking_residual(delta: float) -> tuple[ResidualSpec, np.ndarray]:
    """A residual that takes delta m/s off z_dot every step, whatever the state: a heavier vehicle."""
    spec = ResidualSpec(nx=6, nu=2, hidden=(4,))
    theta = np.zeros(spec.num_params)
    theta[4 * 8 + 4 + 6 * 4 + 3] = -delta  # the output layer's bias of z_dot
    return spec, theta


def _quad_mpsc(terminal_position: str = "free", residual: ResidualSpec | None = None) -> MpscFilter:
    cons = load_constraints(REPO / "config/constraints/quadrotor_2d_flight.yaml", 6, 2)
    cfg = MpscConfig(horizon=20, terminal_scale=1.0, terminal_position=terminal_position,
                     Q_lqr=[0.1, 0.1, 1000.0, 10.0, 100.0, 1.0], R_lqr=[1000.0, 1000.0], iterations=3)
    return MpscFilter(QUAD, DT, cons, cfg, Margins(disturbance=np.array([0.01, 0, 0.01, 0, 0, 0])),
                      residual=residual, substeps=2)


def test_mpsc_terminal_set_and_fallback_are_built_around_the_models_own_steady_state() -> None:
    """With a residual the model's hover thrust is not the nominal one: x_s, u_s solve
    x_s = F(x_s, u_s) + g(x_s, u_s), and the terminal LQR law (the fallback) holds u_s there."""
    delta = 0.01  # m/s per step: 0.5 m/s^2 of extra weight
    spec, theta = _sinking_residual(delta)
    f = _quad_mpsc(residual=spec)
    assert f.u_s == pytest.approx(QUAD.equilibrium()[1], abs=1e-12)  # zero weights: the nominal hover
    f.set_residual_weights(theta)
    mass, g = QUAD.params["mass"], QUAD.params["gravity"]
    # Pitch 0 and constant thrust: RK4 integrates z_dot exactly, so dt (2 u / m - g) = delta.
    assert f.u_s == pytest.approx(np.full(2, 0.5 * mass * (g + delta / DT)), rel=1e-9)
    step = np.asarray(f._rollout(f.x_s0, f.u_s, f._th)).reshape(-1)
    assert np.max(np.abs(step - f.x_s0)) < 1e-12
    assert f.imbalance.max() < 1e-12
    # The discrete steady state sinks at delta / 2 between samples (the residual acts after the RK4
    # step, which moves z with the mean of z_dot over the step).
    assert f.x_s0[3] == pytest.approx(-delta / 2, rel=1e-9)
    here = f.x_s0.copy()
    here[[0, 2]] = [0.3, 1.0]
    assert f._lqr_law(here, here) == pytest.approx(f.u_s, abs=1e-15)
    x = here
    # With nothing certified yet the fallback is that law about the steady state where the vehicle is.
    f._solve = lambda *_: (np.full(40, np.nan), np.full(2, np.nan), np.full(3, np.nan),  # type: ignore
                           np.full((6, 21), np.nan))
    u, rep = f.filter(x, np.array([0.2, 0.2]), 0.0)
    assert rep.infeasible is True
    assert rep.fallback == "QP failed: terminal LQR law"
    assert u == pytest.approx(f.u_s, abs=1e-15)


def test_mpsc_certifies_a_moving_quadrotor_by_a_plan_that_stops_anywhere_inside_the_envelope() -> None:
    """At 2 m/s sideways the backup has to stop somewhere: with the terminal position free it stops
    where it gets to and the hover command passes (to the QP's rounding); held at the current position
    the plan has to come back as well, and the filter has to act at once."""
    x = np.array([0.0, 2.0, 1.0, 0.0, 0.0, 0.0])
    free, held = _quad_mpsc("free"), _quad_mpsc("current")
    _, rep_free = free.filter(x, free.u_s, 0.0)
    assert rep_free.infeasible is False
    assert rep_free.intervention < 1e-4
    stop = free._backup_xs
    assert stop[0] > 0.3  # the plan ends ahead of where it started, at rest
    assert stop[2] == pytest.approx(1.0, abs=0.05)
    _, rep_held = held.filter(x, held.u_s, 0.0)
    assert rep_held.infeasible is False
    assert rep_held.intervention > 5e-3
    assert held._backup_xs[0] == 0.0


def _offset_mpsc(model_error: Any = (), use_residual: bool = True, residual: ResidualSpec | None = None
                 ) -> MpscFilter:
    cons = load_constraints(REPO / "config/constraints/quadrotor_2d_flight.yaml", 6, 2)
    cfg = MpscConfig(horizon=20, terminal_scale=1.0, Q_lqr=[0.1, 0.1, 1000.0, 10.0, 100.0, 1.0],
                     R_lqr=[1000.0, 1000.0], iterations=2, offset_free=True, model_error=model_error,
                     use_residual=use_residual)
    return MpscFilter(QUAD, DT, cons, cfg, Margins(model_error=np.full(6, 0.5),
                                                   disturbance=np.array([0.01, 0, 0.01, 0, 0, 0])),
                      residual=residual, substeps=2)


def test_mpsc_offset_free_plans_with_the_last_measured_error_and_its_own_margin() -> None:
    """The vehicle sinks delta m/s per step more than the nominal model says. With offset_free the first
    step (nothing measured yet) is reported, not certified; from the second on the plan predicts with
    e_hat = x - x_hat (positions left out), the terminal set and its hover thrust are the corrected
    model's, and the margin is mpsc.model_error plus twice the wrench's effect (not model_error)."""
    delta = 0.01
    f = _offset_mpsc(model_error=[0.0, 0.001, 0.0, 0.002, 0.0, 0.0])
    mass, g = QUAD.params["mass"], QUAD.params["gravity"]
    x = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    u_hover = np.full(2, 0.5 * mass * g)
    u0, rep0 = f.filter(x, u_hover, 0.0)
    assert rep0.infeasible is True
    assert rep0.fallback.startswith("no one-step prediction error measured yet (offset_free)")
    x1 = np.asarray(f._rollout(x, u0, f._th)).reshape(-1)
    assert f._last_pred == pytest.approx(x1, abs=1e-15)
    x1[3] -= delta  # what the heavier vehicle does
    x1[2] -= 0.003  # a position error is not carried into the prediction
    assert f.offset(x1) == pytest.approx([0.0, 0.0, 0.0, -delta, 0.0, 0.0], abs=1e-15)
    u1, rep1 = f.filter(x1, u_hover, DT)
    assert rep1.infeasible is False
    # Hovering against e_hat takes the thrust that makes up delta per step (pitch 0: z_dot is linear in u).
    assert f._us_now == pytest.approx(np.full(2, 0.5 * mass * (g + delta / DT)), rel=1e-9)
    # The plan's first predicted state is the model's step plus e_hat.
    step = np.asarray(f._rollout(x1, u1, f._th)).reshape(-1)
    assert f._pred_next == pytest.approx(step, abs=1e-15)
    assert f._last_pred == pytest.approx(step, abs=1e-15)  # what the next step measures e_hat against
    assert f._backup_x[0] == pytest.approx(step + np.array([0, 0, 0, -delta, 0, 0]), abs=1e-9)  # u_0 unrounded
    # Margin: mpsc.model_error (the shared 0.5 is not used) + 2 |dF/dw| w_max.
    d = f.one_step_margin(x1, u1)
    assert d[3] == pytest.approx(0.002 + 2 * 0.01 * DT / mass, rel=1e-6)
    assert d[1] == pytest.approx(0.001 + 2 * 0.01 * DT / mass, rel=1e-6)
    f.reset()
    _, rep = f.filter(x1, u_hover, 0.0)
    assert rep.infeasible is True  # a reset forgets the measured error


def test_mpsc_without_its_residual_plans_with_the_nominal_model_and_ignores_updates() -> None:
    spec, theta = _sinking_residual(0.01)
    f = _offset_mpsc(use_residual=False, residual=spec)
    assert f.pm.residual is None
    f.set_residual_weights(theta)  # accepted, not used
    assert f.u_s == pytest.approx(QUAD.equilibrium()[1], abs=1e-12)
    assert f.pm.theta.size == 0
    with_res = _offset_mpsc(use_residual=True, residual=spec)
    with_res.set_residual_weights(theta)
    assert with_res.u_s[0] > QUAD.equilibrium()[1][0] + 1e-3
