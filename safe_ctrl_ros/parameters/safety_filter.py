"""The safety filter node's parameters and the ROS-free builder of its filter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.parameters.common import MODEL, SYSTEM, TASK, model_of, task_of
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T
from safe_ctrl_ros.safety import ConstraintSet, load_constraints
from safe_ctrl_ros.safety.filters import FILTERS, CbfConfig, MpscConfig, SafetyFilter
from safe_ctrl_ros.safety.filters.settings import build_filter
from safe_ctrl_ros.systems.base import FloatArray

_CBF, _MPSC = CbfConfig(), MpscConfig()


def _derive(v: Mapping[str, Any]) -> dict[str, Any]:
    model = model_of(v)
    nx, nu = model.nx, model.nu
    return {"model_error": [0.0] * nx, "cbf.R": [1.0] * nu, "mpsc.R": [1.0] * nu,
            "mpsc.Q_lqr": [1.0] * nx, "mpsc.R_lqr": [1.0] * nu, "task.goal": model.equilibrium()[0].tolist(),
            "mpsc.model_error": [0.0] * nx}


SAFETY_FILTER = NodeSpec("safety_filter", (
    SYSTEM,
    ParamSpec("filter", T.STRING, "cbf", "which filter certifies the commands", choices=FILTERS),
    ParamSpec("dt", T.DOUBLE, 0.02, "control period in s (the filter's one-step prediction)", low=0.0, low_open=True),
    ParamSpec("substeps", T.INT, 1, "RK4 substeps of the filter's prediction", low=1),
    ParamSpec("constraints_file", T.STRING, "", "constraints YAML (the monitor's); empty = none"),
    ParamSpec("model_file", T.STRING, "", "the learned residual (.npz) the filter predicts with until "
              "adapter/model sends new weights; empty = nominal model only"),
    ParamSpec("disturbance_bound", T.DOUBLE_ARRAY, [0.0] * 6,
              "largest |wrench| per component [fx, fy, fz, tx, ty, tz] the filter is designed for (N, N m)",
              min_size=6, max_size=6),
    ParamSpec("model_error", T.DOUBLE_ARRAY, None, "one-step model error bound per state entry "
              "(the residual's validation error)", derived="zeros (nx values)"),
    ParamSpec("diagnostics_period", T.DOUBLE, 1.0, "wall s between /diagnostics", low=0.0, low_open=True),
    ParamSpec("adapter.sync", T.BOOL, False, "an adapter runs: follow its round schedule as the controller does "
              "(lockstep: a round's model swapped in at its due state, a proposal there waits for it)"),
    ParamSpec("adapter.sync_timeout", T.DOUBLE, 3.0, "wall s to wait for a round's status or model before going on "
              "without waiting (an error: the run is no longer reproducible); below the plant's command_timeout",
              low=0.0, low_open=True),
    ParamSpec("cbf.gamma", T.DOUBLE, _CBF.gamma, "discrete CBF rate: B(x+) >= (1 - gamma) B(x)",
              low=0.0, high=1.0, low_open=True),
    ParamSpec("cbf.alpha", T.DOUBLE, _CBF.alpha, "1/s: B = dh/dt + alpha h for relative degree two",
              low=0.0, low_open=True),
    ParamSpec("cbf.R", T.DOUBLE_ARRAY, None, "weight on u - u_proposed (inputs scaled by half their range)",
              derived="ones (nu values)"),
    ParamSpec("cbf.slack_l1", T.DOUBLE, _CBF.slack_l1, "L1 penalty of a CBF row's slack", low=0.0),
    ParamSpec("cbf.slack_l2", T.DOUBLE, _CBF.slack_l2, "L2 penalty of a CBF row's slack", low=0.0, low_open=True),
    ParamSpec("mpsc.horizon", T.INT, _MPSC.horizon, "backup plan length in steps", low=2),
    ParamSpec("mpsc.R", T.DOUBLE_ARRAY, None, "weight on u_0 - u_proposed (inputs scaled by half their range)",
              derived="ones (nu values)"),
    ParamSpec("mpsc.backup_weight", T.DOUBLE, _MPSC.backup_weight, "weight keeping the backup near the last plan",
              low=0.0),
    ParamSpec("mpsc.Q_lqr", T.DOUBLE_ARRAY, None, "terminal LQR state weights (nx values)", derived="ones (nx values)"),
    ParamSpec("mpsc.R_lqr", T.DOUBLE_ARRAY, None, "terminal LQR input weights (nu values)", derived="ones (nu values)"),
    ParamSpec("mpsc.terminal_scale", T.DOUBLE, _MPSC.terminal_scale,
              "fraction of the largest admissible LQR ellipsoid used as terminal set",
              low=0.0, high=1.0, low_open=True),
    ParamSpec("mpsc.terminal_position", T.STRING, _MPSC.terminal_position,
              "the terminal steady state's position: free (a QP variable), current, reference",
              choices=("free", "current", "reference")),
    ParamSpec("mpsc.slack_l1", T.DOUBLE, _MPSC.slack_l1, "L1 penalty of a tightened row's slack", low=0.0),
    ParamSpec("mpsc.slack_l2", T.DOUBLE, _MPSC.slack_l2, "L2 penalty of a tightened row's slack",
              low=0.0, low_open=True),
    ParamSpec("mpsc.backoff", T.DOUBLE, _MPSC.backoff, "extra tightening inside the QP", low=0.0),
    ParamSpec("mpsc.iterations", T.INT, _MPSC.iterations, "Gauss-Newton steps per command (1: RTI)", low=1),
    ParamSpec("mpsc.offset_free", T.BOOL, _MPSC.offset_free, "add the last measured one-step prediction error "
              "to every stage of the plan (mpsc.model_error then bounds how far the error moves from it)"),
    ParamSpec("mpsc.use_residual", T.BOOL, _MPSC.use_residual, "plan with the learned residual (false: the "
              "nominal model; residual updates are accepted and not used by MPSC)"),
    ParamSpec("mpsc.model_error", T.DOUBLE_ARRAY, None, "with offset_free: bound per state entry on how far the "
              "one-step model error moves from the last measured one over the horizon (replaces model_error)",
              derived="zeros (nx values)"),
    *TASK,
), families=(MODEL,), derive=_derive)

_NODE_ONLY = {"system", "constraints_file", "model_file", "diagnostics_period", "adapter.sync", "adapter.sync_timeout"}


def build_safety_filter(v: Mapping[str, Any]) -> tuple[SafetyFilter, ResidualSpec | None, FloatArray | None]:
    """The filter from the node's parameter values, with its residual spec and initial weights."""
    model = model_of(v)
    path = v["constraints_file"]
    constraints = load_constraints(path, model.nx, model.nu) if path else ConstraintSet([])
    residual, theta = None, None
    if v["model_file"]:
        rm = load_model(v["model_file"], model.nx, model.nu)
        residual, theta = rm.net.spec, rm.net.theta()
    settings = {k: val for k, val in v.items()
                if k not in _NODE_ONLY and not k.startswith(("model.", "task.", "use_sim_time"))}
    filt = build_filter(settings, model, constraints, residual, task_of(model, v))
    if theta is not None and v["filter"] != "none":
        filt.set_residual_weights(theta)
    return filt, residual, theta
