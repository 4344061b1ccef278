"""The plant node's parameters and the ROS-free builder of its loop (safe_ctrl_ros/simulation)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.parameters.common import MODEL_DYNAMIC, SYSTEM, TASK, model_of, task_defaults, task_of
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T
from safe_ctrl_ros.simulation import Episode, LoopConfig, PlantLoop, PlantOutput, PlantSim, Watchdog, make_loop
from safe_ctrl_ros.simulation.loop import MODES
from safe_ctrl_ros.simulation.mujoco.settings import INTEGRATORS, MujocoSettings
from safe_ctrl_ros.simulation.watchdog import safe_command
from safe_ctrl_ros.systems.base import SymbolicModel

ENGINES = ("casadi", "mujoco")
_MJ = MujocoSettings()


def _defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    model = model_of(values)
    x_eq, u_eq = model.equilibrium()
    return {
        **task_defaults(model),
        "initial_state": x_eq.tolist(),
        "init_randomization": np.zeros(model.nx).tolist(),
        "safe_command": u_eq.tolist(),
    }


PLANT = NodeSpec("plant", (
    SYSTEM,
    *TASK,
    ParamSpec("dt", T.DOUBLE, 0.02, "control period in s (one lockstep step)", low=0.0, low_open=True),
    ParamSpec("engine", T.STRING, "casadi",
              "casadi: RK4 on the symbolic model; mujoco: the MJCF model in MuJoCo with the `mujoco.*` effects",
              choices=ENGINES),
    ParamSpec("substeps", T.INT, 10, "RK4 substeps per control period (engine casadi)", low=1, high=100_000),
    ParamSpec("mujoco.timestep", T.DOUBLE, _MJ.timestep,
              "engine mujoco: physics step in s (dt must be a whole multiple)", low=0.0, low_open=True),
    ParamSpec("mujoco.integrator", T.STRING, _MJ.integrator, "engine mujoco: MuJoCo's integrator", choices=INTEGRATORS),
    ParamSpec("mujoco.thrust_lag", T.DOUBLE, _MJ.thrust_lag,
              "engine mujoco, quadrotors: first-order rotor thrust time constant in s; 0 = off", low=0.0),
    ParamSpec("mujoco.drag_linear", T.DOUBLE, _MJ.drag_linear,
              "engine mujoco, quadrotors: linear drag c1 in N s/m (force -(c1 + c2 |v|) v); 0 = off", low=0.0),
    ParamSpec("mujoco.drag_quadratic", T.DOUBLE, _MJ.drag_quadratic,
              "engine mujoco, quadrotors: quadratic drag c2 in N s^2/m^2; 0 = off", low=0.0),
    ParamSpec("mujoco.cart_damping", T.DOUBLE, _MJ.cart_damping,
              "engine mujoco, cartpole: slider viscous damping in N s/m; 0 = off", low=0.0),
    ParamSpec("mujoco.cart_friction", T.DOUBLE, _MJ.cart_friction,
              "engine mujoco, cartpole: slider Coulomb friction in N; 0 = off", low=0.0),
    ParamSpec("mujoco.pole_damping", T.DOUBLE, _MJ.pole_damping,
              "engine mujoco, cartpole: hinge viscous damping in N m s/rad; 0 = off", low=0.0),
    ParamSpec("mujoco.pole_friction", T.DOUBLE, _MJ.pole_friction,
              "engine mujoco, cartpole: hinge Coulomb friction in N m; 0 = off", low=0.0),
    ParamSpec("mujoco.ground_contact", T.BOOL, _MJ.ground_contact,
              "engine mujoco, quadrotors: the floor at z = 0 collides with the vehicle; false = off"),
    ParamSpec("initial_state", T.DOUBLE_ARRAY, None, "the nominal initial state (nx values)",
              derived="the equilibrium state"),
    ParamSpec("init_randomization", T.DOUBLE_ARRAY, None,
              "half-widths of a uniform draw added to initial_state (nx values)", low=0.0,
              derived="zeros (no draw)"),
    ParamSpec("seed", T.INT, 0, "seed of the plant's own generator (initial-state draws)", low=0),
    ParamSpec("mode", T.STRING, "lockstep", "lockstep: step on each answer; realtime: on a wall-clock timer",
              choices=MODES),
    ParamSpec("command_timeout", T.DOUBLE, 1.0, "wall s without a fresh command before the safe command applies",
              low=0.0, low_open=True),
    ParamSpec("safe_command", T.DOUBLE_ARRAY, None, "the command applied on a command timeout (nu values)",
              derived="the equilibrium input"),
    ParamSpec("resend_period", T.DOUBLE, 0.1, "lockstep: wall s before re-sending an unanswered state",
              low=0.0, low_open=True),
    ParamSpec("duration", T.DOUBLE, 0.0, "episode length in sim s; 0 runs forever", low=0.0),
    ParamSpec("stop_on_out_of_bounds", T.BOOL, True, "end the episode when the state leaves its bounds"),
    ParamSpec("wait_for_subscribers", T.INT, 1, "state subscribers to wait for before starting", low=0),
    ParamSpec("autostart", T.BOOL, True, "start when the graph is ready; false: wait for a call of ~/start"),
    ParamSpec("startup_timeout", T.DOUBLE, 30.0,
              "wall s to wait for the graph (then for the first answer) before giving up; 0 waits forever", low=0.0),
    ParamSpec("summary_file", T.STRING, "", "write the episode summary as JSON here; empty = none"),
    ParamSpec("wrench_lockstep", T.BOOL, False, "lockstep: also wait for a wrench stamped t_k (from an injector)"),
    ParamSpec("diagnostics_period", T.DOUBLE, 1.0, "wall s between /diagnostics; 0 = off", low=0.0),
), families=(MODEL_DYNAMIC,), derive=_defaults)


def build_plant(v: Mapping[str, Any], out: PlantOutput, clock: Callable[[], float] = time.monotonic) -> PlantLoop:
    """The plant's loop from its parameter values (PLANT.resolve); `out` receives what it publishes."""
    model = model_of(v)
    sim = make_sim(model, v)
    episode = Episode(sim, v["init_randomization"], duration=v["duration"],
                      stop_on_out_of_bounds=v["stop_on_out_of_bounds"], seed=v["seed"])
    config = LoopConfig(v["mode"], v["resend_period"], v["wait_for_subscribers"], v["autostart"],
                        v["startup_timeout"], v["wrench_lockstep"])
    watchdog = Watchdog(v["command_timeout"], safe_command(model, v["safe_command"]))
    return make_loop(episode, task_of(model, v), watchdog, config, out, clock)


def mujoco_settings(v: Mapping[str, Any]) -> MujocoSettings:
    """The MuJoCo engine's settings from the `mujoco.*` values."""
    return MujocoSettings(**{k.removeprefix("mujoco."): x for k, x in v.items() if k.startswith("mujoco.")})


def make_sim(model: SymbolicModel, v: Mapping[str, Any]) -> PlantSim:
    """The simulator `engine` names: RK4 on the symbolic model, or its MJCF model in MuJoCo."""
    if v["engine"] == "mujoco":
        try:
            from safe_ctrl_ros.simulation.mujoco.plant import MujocoPlantSim
        except ImportError as exc:
            raise ConfigError(f"engine 'mujoco' needs the mujoco package (pinned in requirements/runtime.txt: "
                              f"pip install mujoco==4.0.0): {exc}") from exc

        return MujocoPlantSim(model, v["dt"], mujoco_settings(v), v["initial_state"])
    return PlantSim(model, v["dt"], v["substeps"], v["initial_state"])


def model_with(v: Mapping[str, Any], changed: Mapping[str, Any]) -> SymbolicModel:
    """The model with the `model.*` values in `changed` (the only ones that change at run time);
    ConfigError naming what the model refuses."""
    return model_of({**v, **{k: x for k, x in changed.items() if k.startswith("model.")}})
