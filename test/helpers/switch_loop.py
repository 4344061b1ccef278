"""The core loop of test/test_bumpless.py and bench/bumpless_switch.py: the controller's switch to new
residual weights, and a rollback, in the loop of bench/adapter_closed_loop.py, shortened.

The 2D quadrotor, 30% heavier than the NMPC's model, flies the figure-8 through the flagship's
force disturbances; the NMPC (real-time iteration) predicts with nominal RK4 + the residual, inside
the SupervisedController (control/supervisor.py) whose set_residual_weights makes the switch. The
transient of a switch at step SWITCH is the largest step-to-step command change |u_k - u_{k-1}|_inf
over the steps after it, against the same loop without a switch (the same trajectory up to SWITCH).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController, Nmpc, NmpcConfig
from safe_ctrl_ros.control.supervisor import SupervisedController
from safe_ctrl_ros.disturbances import make_scenario
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.safety import load_constraints
from safe_ctrl_ros.simulation import PlantSim
from safe_ctrl_ros.systems.base import FloatArray
from safe_ctrl_ros.tasks import make_task

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
DT, SUBSTEPS, MASS_SCALE = 0.02, 10, 1.3
FIG8 = {"kind": "figure8", "scale": 0.75, "length": 6.0, "plane": "xz", "offset": [0.0, 1.0]}
Q, R = [5.0, 0.1, 5.0, 0.1, 0.1, 0.1], 0.1
SWITCH, BLEND = 100, 10
STEPS = SWITCH + 15  # the transient: the steps of the blend and 5 after it
BOUND = 2.0


def flagship_forces() -> list[dict[str, object]]:
    items = yaml.safe_load((REPO / "config" / "disturbances" / "quadrotor_2d_gusts.yaml").read_text())["disturbances"]
    return [d for d in items if d.get("target") == "force"]


def fly(theta_a: FloatArray, theta_b: FloatArray | None, switch: str = "warm", blend_steps: int = 0,
        gain: float = 0.0, seed: int = 3) -> FloatArray:
    """The commands (STEPS, nu) of the loop, the weights switched at SWITCH by `switch`: warm (the
    supervisor's set_residual_weights: warm start kept, blended over blend_steps), cold (the same
    weights, then the NMPC's warm start dropped: a restart)."""
    return fly_log(theta_a, {} if theta_b is None else {SWITCH: theta_b}, STEPS, switch, blend_steps, gain, seed)[0]


def fly_log(theta_a: FloatArray, switches: dict[int, FloatArray], steps: int, switch: str = "warm",
            blend_steps: int = 0, gain: float = 0.0, seed: int = 3) -> tuple[FloatArray, FloatArray, FloatArray]:
    """fly() with the weights switched at each step of `switches`: (commands, position errors (m),
    whether any constraint was violated) per step."""
    nominal = systems.make("quadrotor_2d")
    plant = PlantSim(systems.make("quadrotor_2d", mass=nominal.params["mass"] * MASS_SCALE), DT, SUBSTEPS)
    scenario = make_scenario({"disturbances": flagship_forces()}, 6, 2, DT, seed_override=seed)
    task = make_task(nominal, FIG8)
    cons = load_constraints(REPO / "config" / "constraints" / "quadrotor_2d_flight.yaml", 6, 2)
    spec = load_model(MODEL, 6, 2).net.spec
    nmpc = Nmpc(nominal, task, NmpcConfig(Q=Q, R=R, disturbance_gain=gain), cons, spec)
    lqr = LqrController(nominal, Q, R, DT, "exact", task.goal)  # type: ignore[arg-type]
    law = SupervisedController(nominal, task, lqr, nmpc, blend_steps=blend_steps)
    nmpc.set_residual_weights(theta_a)
    plant.reset(task.reference(0.0)[0][0])
    us, errors, violated = [], [], []
    for k in range(steps):
        if k in switches:
            law.set_residual_weights(switches[k])
            if switch == "cold":
                nmpc.reset()
        report = law.compute(plant.x.copy(), k * DT)
        assert not report.fallback_active, report.fallback_reason
        plant.wrench = scenario.force(k * DT)
        x_next = plant.advance(report.u)
        us.append(report.u)
        errors.append(float(np.linalg.norm(x_next[[0, 2]] - task.reference((k + 1) * DT)[0][0][[0, 2]])))
        violated.append(bool(cons.evaluate(x_next, report.u).any_violated))
    return np.array(us), np.array(errors), np.array(violated)


def input_bounds() -> tuple[FloatArray, FloatArray]:
    """The NMPC model's input bounds (low, high)."""
    low, high = systems.make("quadrotor_2d").input_bounds
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def transient(us: FloatArray) -> float:
    """The largest |u_k - u_{k-1}|_inf from the switch on."""
    du = np.abs(np.diff(us, axis=0)).max(axis=1)
    return float(du[SWITCH - 1 :].max())


def pretrained_theta() -> FloatArray:
    """The pretrained residual's weights (the switches fly fractions of them)."""
    return load_model(MODEL, 6, 2).net.theta()


def transients(theta: FloatArray) -> dict[str, float]:
    """The transient of each kind of switch, 0.25 -> 0.5 of the pretrained weights, with the
    offset-free estimate on (gain 0.5, as in the flagship bench)."""
    a, b = 0.25 * theta, 0.5 * theta
    return {
        "none": transient(fly(a, None, gain=0.5)),
        "instant": transient(fly(a, b, gain=0.5)),
        "cold": transient(fly(a, b, switch="cold", gain=0.5)),
        "blended": transient(fly(a, b, blend_steps=BLEND, gain=0.5)),
    }


ROLLBACK_FROM, ROLLBACK_TO, ROLLBACK_END = 60, 120, 260  # the bad version's due, the rollback's due, the end


def rollback_runs(theta: FloatArray) -> dict[str, tuple[FloatArray, FloatArray, FloatArray]]:
    """A verified version (0.5 x the pretrained weights) in force; at ROLLBACK_FROM an update whose
    weights are the pretrained ones with 50% seeded noise each (a bad version); at ROLLBACK_TO the
    rollback to the verified one (blended as every switch). Against the verified version throughout
    and the bad version kept."""
    good = 0.5 * theta
    bad = theta * (1.0 + 0.5 * np.random.default_rng(0).standard_normal(theta.size))
    switches = {ROLLBACK_FROM: bad, ROLLBACK_TO: good}
    return {
        "verified": fly_log(good, {}, ROLLBACK_END, blend_steps=BLEND, gain=0.5),
        "rollback": fly_log(good, switches, ROLLBACK_END, blend_steps=BLEND, gain=0.5),
        "kept": fly_log(good, {ROLLBACK_FROM: bad}, ROLLBACK_END, blend_steps=BLEND, gain=0.5),
    }
