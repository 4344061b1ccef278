"""The plant node's parameters and the ROS-free builder of its loop (safe_ctrl_ros/simulation)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from safe_ctrl_ros.parameters.common import MODEL_DYNAMIC, SYSTEM, TASK, model_of, task_defaults, task_of
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T
from safe_ctrl_ros.simulation import Episode, LoopConfig, PlantLoop, PlantOutput, PlantSim, Watchdog, make_loop
from safe_ctrl_ros.simulation.loop import MODES
from safe_ctrl_ros.simulation.watchdog import safe_command
from safe_ctrl_ros.systems.base import SymbolicModel


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
    ParamSpec("substeps", T.INT, 10, "RK4 substeps per control period", low=1, high=100_000),
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
    sim = PlantSim(model, v["dt"], v["substeps"], v["initial_state"])
    episode = Episode(sim, v["init_randomization"], duration=v["duration"],
                      stop_on_out_of_bounds=v["stop_on_out_of_bounds"], seed=v["seed"])
    config = LoopConfig(v["mode"], v["resend_period"], v["wait_for_subscribers"], v["autostart"],
                        v["startup_timeout"], v["wrench_lockstep"])
    watchdog = Watchdog(v["command_timeout"], safe_command(model, v["safe_command"]))
    return make_loop(episode, task_of(model, v), watchdog, config, out, clock)


def model_with(v: Mapping[str, Any], changed: Mapping[str, Any]) -> SymbolicModel:
    """The model with the `model.*` values in `changed` (the only ones that change at run time);
    ConfigError naming what the model refuses."""
    return model_of({**v, **{k: x for k, x in changed.items() if k.startswith("model.")}})
