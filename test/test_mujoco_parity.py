"""The MuJoCo plant against the symbolic (CasADi) plant: the state mapping, parity with every effect
off, each effect doing what its parameter says, the engine switch, and bad settings."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported (test_mujoco_render renders offscreen)
pytest.importorskip("mujoco")

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.parameters.plant import PLANT, build_plant, make_sim
from safe_ctrl_ros.simulation import PlantSim
from safe_ctrl_ros.simulation.mujoco import MujocoPlantSim, MujocoSettings, from_mujoco, to_mujoco
from safe_ctrl_ros.simulation.mujoco.mjcf import euler_to_quat, quat_to_euler

DT = 0.02
# Several initial states per system, away from the equilibrium (angles, rates and velocities).
STARTS = {
    "cartpole": [[0.0, 0.0, 0.1, 0.0], [0.3, -0.5, -0.4, 1.0], [-1.0, 0.8, 0.9, -2.0]],
    "quadrotor_2d": [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0], [0.2, 0.5, 1.2, -0.3, 0.3, -1.0],
                     [-0.5, -0.2, 0.8, 0.4, -0.6, 2.0]],
    "quadrotor_3d": [[0.0] * 4 + [1.0] + [0.0] * 7,
                     [0.1, 0.2, -0.1, 0.1, 1.0, -0.1, 0.05, -0.08, 0.3, 0.2, -0.1, 0.3],
                     [-0.3, -0.4, 0.2, 0.3, 1.3, 0.2, -0.4, 0.3, -1.2, -1.0, 0.8, -0.5]],
}
# Same physics step and integrator on both sides (1 ms RK4): the planar systems agree to rounding
# (~1e-14); the 3D quadrotor to ~1e-9 (MuJoCo integrates a quaternion, the symbolic model Euler
# angles: RK4's error differs between the two coordinates).
SAME_STEP_TOL = 1e-8
# CasADi at its default 10 substeps (2 ms) against MuJoCo at 1 ms: RK4's own error only.
DEFAULT_STEP_TOL = 1e-5


def _inputs(model: systems.SymbolicModel, rng: np.random.Generator, n: int) -> np.ndarray:
    span = model.input_high - model.input_low
    return np.clip(model.u_eq + rng.uniform(-0.05, 0.05, (n, model.nu)) * span, model.input_low, model.input_high)


def _max_deviation(name: str, start: list[float], substeps: int, seed: int, steps: int = 50) -> float:
    model = systems.make(name)
    ca_sim = PlantSim(model, DT, substeps, start)
    mj_sim = MujocoPlantSim(model, DT, MujocoSettings.nominal(), start)
    worst = 0.0
    for u in _inputs(model, np.random.default_rng(seed), steps):
        ca_sim.advance(u)
        mj_sim.advance(u)
        worst = max(worst, float(np.max(np.abs(ca_sim.x - mj_sim.x))))
    return worst


@pytest.mark.parametrize("name", sorted(STARTS))
def test_nominal_mujoco_matches_the_symbolic_plant(name: str) -> None:
    """Every effect off: 1 s of random inputs from three initial states, entry by entry."""
    for i, start in enumerate(STARTS[name]):
        assert _max_deviation(name, start, substeps=20, seed=i) < SAME_STEP_TOL, (name, start)
        assert _max_deviation(name, start, substeps=10, seed=i) < DEFAULT_STEP_TOL, (name, start)


def test_a_wrong_mapping_would_show() -> None:
    """The parity check is sharp: a pole 1% longer in MuJoCo only is far outside the tolerance."""
    model = systems.make("cartpole")
    ca_sim = PlantSim(model, DT, 20, STARTS["cartpole"][1])
    mj_sim = MujocoPlantSim(systems.make("cartpole", pole_length=0.505), DT, MujocoSettings.nominal(),
                            STARTS["cartpole"][1])
    for _ in range(50):
        ca_sim.advance(np.array([1.0]))
        mj_sim.advance(np.array([1.0]))
    assert np.max(np.abs(ca_sim.x - mj_sim.x)) > 1e3 * SAME_STEP_TOL


@pytest.mark.parametrize("name", sorted(STARTS))
def test_wrench_acts_as_in_the_symbolic_model(name: str) -> None:
    """A world-frame wrench on the centre of mass (the pole's for the cart-pole) moves both alike."""
    model = systems.make(name)
    start = STARTS[name][1]
    ca_sim = PlantSim(model, DT, 20, start)
    mj_sim = MujocoPlantSim(model, DT, MujocoSettings.nominal(), start)
    wrench = np.array([0.02, -0.01, 0.03, 1e-5, -2e-5, 1e-5])
    supported = np.array([a in model.wrench_axes for a in ("fx", "fy", "fz", "tx", "ty", "tz")])
    ca_sim.wrench = mj_sim.wrench = np.where(supported, wrench, 0.0)
    free = PlantSim(model, DT, 20, start)
    for _ in range(25):
        for sim in (ca_sim, mj_sim, free):
            sim.advance(model.u_eq)
    assert np.max(np.abs(ca_sim.x - mj_sim.x)) < SAME_STEP_TOL
    assert np.max(np.abs(ca_sim.x - free.x)) > 1e-4  # the wrench did something


def test_state_mapping_round_trips() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        phi, theta, psi = rng.uniform(-1.4, 1.4), rng.uniform(-1.4, 1.4), rng.uniform(-3.1, 3.1)
        q = euler_to_quat(phi, theta, psi)
        assert np.allclose(quat_to_euler(q), (phi, theta, psi), atol=1e-12)
        x = rng.normal(size=12)
        x[6:9] = phi, theta, psi
        qpos, qvel = to_mujoco("quadrotor_3d", x)
        assert np.allclose(from_mujoco("quadrotor_3d", qpos, qvel), x, atol=1e-12)
    x4 = np.array([1.0, 2.0, 3.0, 4.0])
    qpos, qvel = to_mujoco("cartpole", x4)
    assert qpos.tolist() == [1.0, 3.0]
    assert qvel.tolist() == [2.0, 4.0]


def test_quaternion_convention_is_body_to_world_zyx() -> None:
    """A pure pitch theta turns the body z axis (the thrust) to (sin theta, 0, cos theta) in the world,
    as the symbolic model's R = Rz Ry Rx does."""
    import mujoco

    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, euler_to_quat(0.0, 0.3, 0.0))
    assert np.allclose(mat.reshape(3, 3)[:, 2], [math.sin(0.3), 0.0, math.cos(0.3)], atol=1e-12)
    mujoco.mju_quat2Mat(mat, euler_to_quat(0.2, 0.0, 0.0))
    assert np.allclose(mat.reshape(3, 3)[:, 2], [0.0, -math.sin(0.2), math.cos(0.2)], atol=1e-12)


# --- the effects -----------------------------------------------------------------------------------
def _nominal_with(**effects: float | bool) -> MujocoSettings:
    """Every effect off but `effects`, at the values given."""
    return replace(MujocoSettings.nominal(), **effects)


def test_thrust_lag_is_first_order() -> None:
    """From hover, a thrust step dT per rotor: z_dot(t) = 2 dT / m (t - tau (1 - exp(-t / tau))), to 1.5%
    (MuJoCo resolves the filter at its physics step: -0.8% at 1 ms, -0.09% at 0.1 ms)."""
    model = systems.make("quadrotor_2d")
    tau, d_t = 0.05, 0.02
    sim = MujocoPlantSim(model, DT, _nominal_with(thrust_lag=tau), [0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    sim.advance(model.u_eq + d_t)
    m = model.params["mass"]
    expected = 2 * d_t / m * (DT - tau * (1 - math.exp(-DT / tau)))
    assert sim.x[3] == pytest.approx(expected, rel=0.015)
    no_lag = MujocoPlantSim(model, DT, MujocoSettings.nominal(), [0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    no_lag.advance(model.u_eq + d_t)
    assert no_lag.x[3] == pytest.approx(2 * d_t / m * DT, rel=1e-6)
    assert sim.thrust() - model.u_eq == pytest.approx(np.full(2, d_t * (1 - math.exp(-DT / tau))), rel=0.015)


def test_drag_decelerates_as_specified() -> None:
    """At hover thrust and speed v along x: x_dd = -(c1 + c2 |v|) v / m (one short step)."""
    model = systems.make("quadrotor_3d")
    c1, c2, v = 0.01, 0.005, 2.0
    settings = MujocoSettings(thrust_lag=0.0, drag_linear=c1, drag_quadratic=c2, ground_contact=False)
    x0 = np.zeros(12)
    x0[1], x0[4] = v, 1.0
    sim = MujocoPlantSim(model, 0.002, settings, x0)
    sim.advance(model.u_eq)
    expected_v = v - (c1 + c2 * v) * v / model.params["mass"] * 0.002
    assert sim.x[1] == pytest.approx(expected_v, rel=1e-4)
    assert sim.x[5] == pytest.approx(0.0, abs=1e-9)  # hover: no vertical drift


def test_cart_friction_holds_the_cart_against_a_small_force() -> None:
    """Coulomb friction of 0.5 N: a 0.3 N push does not move the cart; 1 N does, as 0.5 N moves it
    without friction (the pole swinging back included)."""
    model = systems.make("cartpole")
    settings = _nominal_with(cart_friction=0.5)
    stuck = MujocoPlantSim(model, DT, settings, [0.0, 0.0, 0.0, 0.0])
    moving = MujocoPlantSim(model, DT, settings, [0.0, 0.0, 0.0, 0.0])
    free = MujocoPlantSim(model, DT, MujocoSettings.nominal(), [0.0, 0.0, 0.0, 0.0])
    net = MujocoPlantSim(model, DT, MujocoSettings.nominal(), [0.0, 0.0, 0.0, 0.0])
    for _ in range(25):
        stuck.advance(np.array([0.3]))
        moving.advance(np.array([1.0]))
        free.advance(np.array([0.3]))
        net.advance(np.array([0.5]))
    assert abs(stuck.x[1]) < 0.02 * abs(free.x[1])
    assert moving.x[1] == pytest.approx(net.x[1], rel=0.03)


def test_cart_damping_decays_the_velocity() -> None:
    """Viscous damping b on the slider with the pole hanging still: v(t) ~ v0 exp(-b t / m_t) for small b t."""
    model = systems.make("cartpole")
    settings = _nominal_with(cart_damping=0.2)
    sim = MujocoPlantSim(model, DT, settings, [0.0, 1.0, 0.0, 0.0])
    for _ in range(5):
        sim.advance(np.zeros(1))
    # the pole is pulled along with the cart (theta moves), so compare with the free plant's loss
    free = MujocoPlantSim(model, DT, MujocoSettings.nominal(), [0.0, 1.0, 0.0, 0.0])
    for _ in range(5):
        free.advance(np.zeros(1))
    assert free.x[1] == pytest.approx(1.0, abs=1e-9)
    assert sim.x[1] == pytest.approx(math.exp(-0.2 * 0.1 / 1.1), rel=2e-3)


def test_ground_contact_stops_a_falling_vehicle() -> None:
    """Motors at their minimum from 0.2 m: with contact the vehicle rests on the floor (its frame's
    6 mm half-height), without it falls through to the termination bound."""
    model = systems.make("quadrotor_3d")
    x0 = np.zeros(12)
    x0[4] = 0.2
    on = MujocoPlantSim(model, DT, _nominal_with(ground_contact=True), x0)
    off = MujocoPlantSim(model, DT, MujocoSettings.nominal(), x0)
    for _ in range(50):
        on.advance(model.input_low)
        off.advance(model.input_low)
    assert on.x[4] == pytest.approx(0.006, abs=0.002)
    assert abs(on.x[5]) < 1e-3
    assert off.x[4] < -0.5


def test_parameter_change_recompiles_and_carries_the_state() -> None:
    """The injector's parameter disturbance (model.mass x 1.3) on MuJoCo: the state carries over and
    the vehicle then falls at hover thrust as the heavier symbolic model does."""
    nominal = systems.make("quadrotor_2d")
    heavy = systems.make("quadrotor_2d", mass=nominal.params["mass"] * 1.3)
    start = STARTS["quadrotor_2d"][1]
    mj_sim = MujocoPlantSim(nominal, DT, MujocoSettings.nominal(), start)
    ca_sim = PlantSim(nominal, DT, 20, start)
    for sim in (mj_sim, ca_sim):
        sim.advance(nominal.u_eq)
        sim.set_model(heavy)
        for _ in range(10):
            sim.advance(nominal.u_eq)
    assert np.max(np.abs(mj_sim.x - ca_sim.x)) < SAME_STEP_TOL
    assert mj_sim.mj is not None
    assert mj_sim.mj.body_mass[1] == pytest.approx(heavy.params["mass"])


def test_same_settings_same_run() -> None:
    """Determinism: two MuJoCo plants with every effect on, the same inputs, bit for bit the same states."""
    model = systems.make("quadrotor_3d")
    runs = []
    for _ in range(2):
        sim = MujocoPlantSim(model, DT, MujocoSettings(), STARTS["quadrotor_3d"][1])
        for u in _inputs(model, np.random.default_rng(5), 40):
            sim.advance(u)
        runs.append(sim.x.copy())
    assert np.array_equal(runs[0], runs[1])


# --- the engine switch and bad input ----------------------------------------------------------------
def test_engine_parameter_selects_the_simulator() -> None:
    values = PLANT.resolve({"system": "quadrotor_2d", "engine": "mujoco", "mujoco.thrust_lag": 0.0})
    sim = make_sim(systems.make("quadrotor_2d"), values)
    assert isinstance(sim, MujocoPlantSim)
    assert sim.physics_steps == 20
    assert sim.mj is not None
    assert sim.mj.na == 0  # thrust lag off: no actuator state
    assert sim.describe()["engine"] == "mujoco"
    casadi = make_sim(systems.make("quadrotor_2d"), PLANT.resolve({"system": "quadrotor_2d"}))
    assert type(casadi) is PlantSim
    assert casadi.describe()["engine"] == "casadi"


def test_summary_names_the_engine_and_effects() -> None:
    class Out:
        def __getattr__(self, name: str) -> object:
            return lambda *a, **k: (0, 0) if name == "graph" else None

    values = PLANT.resolve({"system": "cartpole", "engine": "mujoco"})
    loop = build_plant(values, Out())  # type: ignore[arg-type]
    summary = loop.summary()
    assert summary["engine"] == "mujoco"
    physics = summary["physics"]
    assert isinstance(physics, dict)
    assert physics["effects"] == {"cart_damping": 0.1, "cart_friction": 0.05, "pole_damping": 0.0005,
                                  "pole_friction": 0.0005}
    assert physics["step_s"] == 0.001
    assert physics["substeps"] == 20


@pytest.mark.parametrize(("overrides", "message"), [
    ({"system": "quadrotor_1d", "engine": "mujoco"}, "engine 'mujoco' has no model of 'quadrotor_1d'"),
    ({"system": "cartpole", "engine": "mujoco", "mujoco.timestep": 0.003}, "whole multiple of the physics step"),
])
def test_bad_engine_settings_are_named(overrides: dict[str, object], message: str) -> None:
    values = PLANT.resolve(overrides)
    with pytest.raises(ConfigError, match=message):
        make_sim(systems.make(str(overrides["system"])), values)


def test_bad_effect_values_are_named() -> None:
    with pytest.raises(ConfigError, match=r"mujoco\.drag_linear.*>= 0"):
        MujocoSettings(drag_linear=-1.0)
    with pytest.raises(ConfigError, match=r"mujoco\.integrator"):
        MujocoSettings(integrator="verlet")
    with pytest.raises(ConfigError, match="unknown MuJoCo effect"):
        MujocoSettings().only("wind")


def test_bench_prediction_error_sees_the_effects() -> None:
    """bench/mujoco_plant.py's one-step prediction error: ~0 with every effect off, large with the lag."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import mujoco_plant  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    off = mujoco_plant.prediction_error("quadrotor_2d", MujocoSettings.nominal(), seed=0)
    lag = mujoco_plant.prediction_error("quadrotor_2d", MujocoSettings().only("thrust_lag"), seed=0)
    assert off["relative_error"] < 1e-8
    assert lag["relative_error"] > 0.1
