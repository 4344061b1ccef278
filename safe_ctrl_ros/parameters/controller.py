"""The controller node's parameters and the ROS-free builder of its control law."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from safe_ctrl_ros.control import LqrController, Nmpc, NmpcConfig, ResidualSpec
from safe_ctrl_ros.control.nmpc import SOLVERS
from safe_ctrl_ros.control.residual import ACTIVATIONS
from safe_ctrl_ros.control.supervisor import FallbackMode, SupervisedController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.parameters.common import MODEL, SYSTEM, TASK, model_of, task_defaults, task_of
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T
from safe_ctrl_ros.safety import ConstraintSet, load_constraints
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel
from safe_ctrl_ros.tasks import Task

CONTROLLERS = ("lqr", "nmpc")
DISCRETIZATIONS = ("exact", "euler")
TERMINAL_COSTS = ("lqr", "weight")
WEIGHT = "diagonal (nx values), one value for all, or a full nx*nx matrix (row-major)"


def _defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    model = model_of(values)
    return {**task_defaults(model), "fallback.command": model.equilibrium()[1].tolist(),
            "disturbance_estimate.states": [model.state_names[i] for i in model.velocity_indices]}


CONTROLLER = NodeSpec("controller", (
    SYSTEM,
    *TASK,
    ParamSpec("controller", T.STRING, "lqr", "the primary control law", choices=CONTROLLERS),
    ParamSpec("dt", T.DOUBLE, 0.02, "control period in s", low=0.0, low_open=True),
    ParamSpec("lqr.Q", T.DOUBLE_ARRAY, [1.0], f"LQR state weight: {WEIGHT}"),
    ParamSpec("lqr.R", T.DOUBLE_ARRAY, [0.1], "LQR input weight: diagonal (nu values), one value, or nu*nu"),
    ParamSpec("lqr.discretization", T.STRING, "exact", "exact (zero-order hold) or euler (safe-control-gym's)",
              choices=DISCRETIZATIONS),
    ParamSpec("constraints_file", T.STRING, "", "constraints YAML (the monitor's file); empty = none"),
    ParamSpec("nmpc.horizon", T.INT, 20, "prediction horizon (steps)", low=1, high=10_000),
    ParamSpec("nmpc.Q", T.DOUBLE_ARRAY, [1.0], f"NMPC state weight: {WEIGHT}"),
    ParamSpec("nmpc.R", T.DOUBLE_ARRAY, [0.1], "NMPC input weight: diagonal (nu values), one value, or nu*nu"),
    ParamSpec("nmpc.terminal_cost", T.STRING, "lqr",
              "terminal weight: lqr = the LQR cost-to-go at the goal, weight = nmpc.P", choices=TERMINAL_COSTS),
    ParamSpec("nmpc.P", T.DOUBLE_ARRAY, [1.0], f"terminal weight with nmpc.terminal_cost weight: {WEIGHT}"),
    ParamSpec("nmpc.solver", T.STRING, "rti_hpipm", "the NLP method (docs/CONTROLLERS.md)", choices=SOLVERS),
    ParamSpec("nmpc.sqp_iterations", T.INT, 1, "SQP iterations per solve (1 = real-time iteration)",
              low=1, high=1000),
    ParamSpec("nmpc.rk4_substeps", T.INT, 1, "RK4 steps per interval in the prediction", low=1, high=1000),
    ParamSpec("nmpc.slack_l1", T.DOUBLE, 1000.0, "L1 penalty on constraint slack", low=0.0),
    ParamSpec("nmpc.slack_l2", T.DOUBLE, 1000.0, "L2 penalty on constraint slack", low=0.0),
    ParamSpec("nmpc.deadline", T.DOUBLE, 0.0, "fall back when a solve takes longer, s; 0 = off", low=0.0,
              read_only=False),
    ParamSpec("disturbance_estimate.gain", T.DOUBLE, 0.0,
              "NMPC offset-free prediction: filter gain of the disturbance estimate (a per-step offset on "
              "disturbance_estimate.states, updated every step from the prediction error); 0 = off",
              low=0.0, high=1.0),
    ParamSpec("disturbance_estimate.states", T.STRING_ARRAY, None,
              "names of the states the disturbance estimate acts on", derived="the model's velocity states"),
    ParamSpec("residual.enabled", T.BOOL, False, "NMPC: predict with the learned residual model"),
    ParamSpec("residual.model_file", T.STRING, "",
              "start weights (.npz); when set, they fix the hidden sizes, activation and gains"),
    ParamSpec("residual.hidden", T.INT_ARRAY, [16, 16], "hidden layer sizes (without a model file)",
              low=1, high=4096),
    ParamSpec("residual.activation", T.STRING, "relu", "hidden activation (without a model file)",
              choices=ACTIVATIONS),
    ParamSpec("residual.in_gain", T.DOUBLE_ARRAY, [1.0],
              "input gains: nx+nu values or one for all (without a model file)"),
    ParamSpec("residual.out_gain", T.DOUBLE_ARRAY, [1.0],
              "output gains: nx values or one for all (without a model file)"),
    ParamSpec("safety.sync_with_monitor", T.BOOL, False,
              "lockstep: answer a state only after the monitor's status for it (deterministic reactions)"),
    ParamSpec("safety.sync_timeout", T.DOUBLE, 0.5, "wall s to wait for the monitor's status", low=0.0,
              read_only=False),
    ParamSpec("adapter.sync", T.BOOL, False,
              "an adapter runs: answer nothing before its schedule is announced; with a lockstep adapter, "
              "answer a round's due state only after that round's result (reproducible model updates)"),
    ParamSpec("adapter.sync_timeout", T.DOUBLE, 3.0, "wall s to wait for a round's result before going on "
              "without waiting (an error: the run is no longer reproducible); keep it below the plant's "
              "command_timeout, so a dead adapter never costs a safe-command step", low=0.0, low_open=True,
              read_only=False),
    ParamSpec("adapter.blend_steps", T.INT, 10, "new residual weights (an update or a rollback) move from the ones "
              "in force to the new ones over this many solves, warm start kept (a bumpless switch; "
              "docs/CONTROLLERS.md); 0 = at once", low=0, high=10000),
    ParamSpec("max_state_age", T.DOUBLE, 0.1,
              "s (node clock): an older state is stale and gets the fallback; 0 = off", low=0.0, read_only=False),
    ParamSpec("fallback.mode", T.STRING, "lqr", "the fallback law: LQR or fallback.command",
              choices=tuple(m.value for m in FallbackMode)),
    ParamSpec("fallback.command", T.DOUBLE_ARRAY, None, "the safe command (nu values)",
              derived="the equilibrium input"),
), families=(MODEL,), derive=_defaults)


@dataclass
class BuiltController:
    model: SymbolicModel
    task: Task
    law: SupervisedController
    residual: ResidualSpec | None
    constraints: ConstraintSet
    horizon: int
    solver: str


def _weight(values: list[float], n: int) -> float | FloatArray:
    """One value, a diagonal, or a row-major n*n matrix (the core checks the sizes)."""
    if len(values) == 1:
        return values[0]
    arr = np.array(values)
    return arr.reshape(n, n) if arr.size == n * n and n > 1 else arr


def _gain(values: list[float], n: int) -> FloatArray:
    return np.full(n, values[0]) if len(values) == 1 else np.array(values)


def residual_of(model: SymbolicModel, v: Mapping[str, Any]) -> tuple[ResidualSpec | None, FloatArray | None]:
    """The residual's shape and start weights (from the model file, else the parameters)."""
    if not v["residual.enabled"]:
        return None, None
    if v["residual.model_file"]:
        start = load_model(v["residual.model_file"], model.nx, model.nu)
        return start.net.spec, start.net.theta()
    spec = ResidualSpec(model.nx, model.nu, tuple(v["residual.hidden"]), v["residual.activation"],
                        _gain(v["residual.in_gain"], model.nx + model.nu), _gain(v["residual.out_gain"], model.nx))
    return spec, None


def disturbance_states(model: SymbolicModel, names: list[str]) -> tuple[int, ...]:
    """State indices from the names of `disturbance_estimate.states` (each a state of the model, once)."""
    unknown = [n for n in names if n not in model.state_names]
    if unknown:
        raise ConfigError(f"parameter 'disturbance_estimate.states': {unknown} are not states of {model.name} "
                          f"({', '.join(model.state_names)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter 'disturbance_estimate.states': a state named twice in {names}")
    return tuple(model.state_names.index(n) for n in names)


def nmpc_config(model: SymbolicModel, v: Mapping[str, Any]) -> NmpcConfig:
    if v["nmpc.terminal_cost"] == "lqr" and v["nmpc.P"] != CONTROLLER["nmpc.P"].default:
        raise ConfigError("parameter 'nmpc.P': used only with nmpc.terminal_cost 'weight' (it is 'lqr')")
    gain = v["disturbance_estimate.gain"]
    return NmpcConfig(
        horizon=v["nmpc.horizon"], dt=v["dt"], Q=_weight(v["nmpc.Q"], model.nx), R=_weight(v["nmpc.R"], model.nu),
        P=_weight(v["nmpc.P"], model.nx) if v["nmpc.terminal_cost"] == "weight" else None,
        solver=v["nmpc.solver"], sqp_iterations=v["nmpc.sqp_iterations"], rk4_substeps=v["nmpc.rk4_substeps"],
        slack_l1=v["nmpc.slack_l1"], slack_l2=v["nmpc.slack_l2"],
        disturbance_gain=gain,
        disturbance_states=disturbance_states(model, v["disturbance_estimate.states"]) if gain > 0 else None,
    )


def build_controller(v: Mapping[str, Any]) -> BuiltController:
    """The supervised control law from the controller's parameter values (CONTROLLER.resolve).

    The NMPC (when `controller` is nmpc) is built here: this can take seconds.
    """
    model = model_of(v)
    task = task_of(model, v)
    cfg = nmpc_config(model, v)
    path = v["constraints_file"]
    constraints = load_constraints(path, model.nx, model.nu) if path else ConstraintSet([])
    residual, theta = residual_of(model, v)
    lqr = LqrController(model, _weight(v["lqr.Q"], model.nx), _weight(v["lqr.R"], model.nu),  # type: ignore[arg-type]
                        v["dt"], v["lqr.discretization"], task.goal)
    nmpc = Nmpc(model, task, cfg, constraints, residual) if v["controller"] == "nmpc" else None
    if nmpc is not None and theta is not None:
        nmpc.set_residual_weights(theta)
    law = SupervisedController(model, task, lqr, nmpc, FallbackMode(v["fallback.mode"]), v["fallback.command"],
                               v["nmpc.deadline"], v["adapter.blend_steps"])
    return BuiltController(model, task, law, residual, constraints, cfg.horizon, cfg.solver)
