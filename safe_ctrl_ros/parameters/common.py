"""Parameters shared by several nodes: `system` with its `model.*` family, and the task (`task.*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from safe_ctrl_ros import systems
from safe_ctrl_ros.parameters.spec import ParamFamily, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T
from safe_ctrl_ros.systems.base import SymbolicModel
from safe_ctrl_ros.tasks import KINDS, Task, make_task


def _known_system(value: str, where: str) -> str:
    systems.param_specs(value)  # UnknownSystemError naming the known systems
    return value


SYSTEM = ParamSpec(
    "system", T.STRING, "cartpole", f"the model: one of {', '.join(systems.SYSTEM_NAMES)}", check=_known_system
)


def model_params(system: str) -> tuple[ParamSpec, ...]:
    """The physical parameters `model.<name>` of `system`, with the core's defaults and bounds."""
    return tuple(
        ParamSpec(f"model.{name}", T.DOUBLE, float(p.default), p.doc,
                  low=0.0 if p.positive else None, low_open=p.positive)
        for name, p in systems.param_specs(system).items()
    )


# The physical parameters of the chosen system; read only (a node that applies changes, the plant,
# uses `replace(MODEL, read_only=False)`).
MODEL = ParamFamily("model.", "system", model_params,
                    "the physical parameters of `system` (docs/SYSTEMS.md), e.g. `model.mass`")
MODEL_DYNAMIC = replace(MODEL, read_only=False)


def model_of(values: Mapping[str, Any]) -> SymbolicModel:
    """The model named by values['system'] with the `model.*` values."""
    params = {k.removeprefix("model."): v for k, v in values.items() if k.startswith("model.")}
    return systems.make(str(values["system"]), **params)


TASK: tuple[ParamSpec, ...] = (
    ParamSpec("task.kind", T.STRING, "stabilization", "what to do: hold a goal, or track a trajectory",
              choices=("stabilization", *KINDS)),
    ParamSpec("task.goal", T.DOUBLE_ARRAY, None, "stabilization: the goal state (nx values)",
              derived="the equilibrium state"),
    ParamSpec("task.scale", T.DOUBLE, 1.0, "tracking: trajectory scale in m"),
    ParamSpec("task.length", T.DOUBLE, 10.0, "tracking: time over which num_cycles are flown, s",
              low=0.0, low_open=True),
    ParamSpec("task.num_cycles", T.INT, 1, "tracking: cycles within task.length", low=1),
    ParamSpec("task.plane", T.STRING, "xz", "tracking: the plane, two different letters of x, y, z"),
    ParamSpec("task.offset", T.DOUBLE_ARRAY, [0.0, 0.0], "tracking: offset added in the plane, m",
              min_size=2, max_size=2),
)


def task_defaults(model: SymbolicModel) -> dict[str, Any]:
    return {"task.goal": model.equilibrium()[0].tolist()}


def task_of(model: SymbolicModel, values: Mapping[str, Any]) -> Task:
    """The task from the `task.*` values (the core checks the goal's size and the plane)."""
    spec: dict[str, object] = {"kind": values["task.kind"], "goal": values["task.goal"]}
    if values["task.kind"] != "stabilization":
        spec.update({k: values[f"task.{k}"] for k in ("scale", "length", "num_cycles", "plane", "offset")})
    return make_task(model, spec)
