"""The disturbance injector node's parameters and the ROS-free builder of its scenario."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safe_ctrl_ros.disturbances import Scenario, load_scenario
from safe_ctrl_ros.parameters.common import MODEL, SYSTEM, model_of
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T

DISTURBANCE_INJECTOR = NodeSpec("disturbance_injector", (
    SYSTEM,
    ParamSpec("dt", T.DOUBLE, 0.02, "control period in s (impulse decay steps)", low=0.0, low_open=True),
    ParamSpec("scenario_file", T.STRING, "", "disturbance scenario YAML; empty = pass everything through"),
    ParamSpec("seed", T.INT, -1, "scenario seed; -1 = the file's seed", low=-1),
    ParamSpec("publish_wrench", T.BOOL, True, "send one wrench per step to plant/wrench"),
), families=(MODEL,))


def build_scenario(v: Mapping[str, Any]) -> Scenario:
    """The scenario from the node's parameter values (DISTURBANCE_INJECTOR.resolve)."""
    model = model_of(v)
    if not v["scenario_file"]:
        return Scenario([], 0)
    seed = None if v["seed"] < 0 else v["seed"]
    return load_scenario(v["scenario_file"], model.nx, model.nu, v["dt"], list(model.params), seed)
