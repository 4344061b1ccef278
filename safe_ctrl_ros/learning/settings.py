"""The adapter's settings, described once (specs): for the node and the offline re-trainer.

SETTINGS are the settings of the learning core (the round loop and its rollback policy included:
safe_ctrl_ros.learning.rounds); ADAPTER is the adapter node's whole spec (with `system`,
`model.*` and the node's own `mode` and `nice`), from which the node declares its
parameters (safe_ctrl_ros.ros.params) and docs/ARCHITECTURE.md shows the table. `safe-ctrl-retrain`
reads the same names from a params file. `adapter_settings` turns either into the core's
configuration, so a setting tried offline on a bag means the same on board.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from safe_ctrl_ros import config_check as check
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import METHODS, AdapterConfig, Method, OnlineAdapter
from safe_ctrl_ros.learning.fixed_point import GUARD
from safe_ctrl_ros.learning.model_file import ResidualModel, load_model
from safe_ctrl_ros.learning.rounds import RollbackPolicy, Schedule
from safe_ctrl_ros.learning.trainers import (
    TRAINABLE,
    Distribution,
    Estimator,
    ForwardGradientConfig,
    Normalize,
    SparseBy,
    Trainable,
)
from safe_ctrl_ros.learning.validation import CheckConfig
from safe_ctrl_ros.parameters.common import MODEL, SYSTEM, model_of
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T
from safe_ctrl_ros.systems.base import SymbolicModel

MAX_COUNT = 1_000_000  # buffers are allocated up front: a mistyped 2e9 must not exhaust memory


def _zero_or_above_one(value: float, where: str) -> float:
    if value != 0.0 and value <= 1.0:
        raise ConfigError(f"{where}: expected 0 (never) or a finite number > 1, got {check.shown(value)}")
    return value


SETTINGS: tuple[ParamSpec, ...] = (
    ParamSpec("dt", T.DOUBLE, 0.02, "control period in s (transitions are one period)", low=0.0, low_open=True),
    ParamSpec("model_file", T.STRING, "", "the starting residual model (.npz, safe-ctrl-pretrain); required"),
    ParamSpec("method", T.STRING, "qzo_ff", "on-board learning method", choices=METHODS),
    ParamSpec("buffer_size", T.INT, 2000, "training transitions kept", low=10, high=MAX_COUNT),
    ParamSpec("val_every", T.INT, 5, "every n-th transition is held out for validation", low=2, high=MAX_COUNT),
    ParamSpec("batch_size", T.INT, 128, "transitions per training step (at most buffer_size)", low=1, high=MAX_COUNT),
    ParamSpec("margin", T.DOUBLE, 0.02, "relative validation improvement needed to publish", low=0.0, high=1.0,
              high_open=True),
    ParamSpec("min_val", T.INT, 20, "validation transitions needed before training", low=1, high=MAX_COUNT),
    ParamSpec("bp_lr", T.DOUBLE, 1e-3, "Adam learning rate of the backprop baseline", low=0.0, low_open=True),
    ParamSpec("seed", T.INT, 0, "seed of the batch sampling"),
    ParamSpec("outlier_scales", T.DOUBLE, 50.0, "drop transitions beyond this many loss scales; 0 = keep all",
              low=0.0),
    ParamSpec("diverge_factor", T.DOUBLE, 3.0, "restart from the newest version, at half the step size, when the "
              "validation loss exceeds this many times the newest version's on the same validation transitions "
              "(0 or > 1); 0 = never", low=0.0, check=_zero_or_above_one),
    ParamSpec("min_lr_scale", T.DOUBLE, 1.0 / 64.0, "floor of the divergence backoff (step size relative to the "
              "configured one): a divergence that would halve it below this freezes the adapter on the newest "
              "version and reports why (AdapterStatus.frozen_reason)", low=0.0, low_open=True, high=1.0),
    ParamSpec("check.horizon", T.INT, 20, "steps of the open-loop rollouts a candidate's multi-step prediction error "
              "is taken over, nominal + residual through the recorded inputs (the NMPC's horizon); 0 = no rollout "
              "check (docs/LEARNING.md, Validated, bumpless updates)", low=0, high=1000),
    ParamSpec("check.window", T.INT, 100, "the newest transitions the rollouts start in and the residual's "
              "Jacobians are taken at", low=1, high=MAX_COUNT),
    ParamSpec("check.stride", T.INT, 5, "steps between two rollouts' starts", low=1, high=MAX_COUNT),
    ParamSpec("check.rollout_factor", T.DOUBLE, 1.0, "a candidate whose multi-step prediction error exceeds this "
              "many times the model in force's on the same transitions is not published; 0 = off", low=0.0),
    ParamSpec("check.jacobian_factor", T.DOUBLE, 0.0, "a candidate whose largest Jacobian norm ||[dg/dx, dg/du]||_F "
              "at the newest transitions exceeds this many times the model in force's is not published; 0 = off",
              low=0.0),
    ParamSpec("check.jacobian_limit", T.DOUBLE, 0.0, "... or exceeds this (absolute); 0 = off", low=0.0),
    ParamSpec("targets.remove_disturbance", T.BOOL, True, "train on targets with the NMPC's offset-free disturbance "
              "estimate removed, x_k+1 - d_k - F(x_k, u_k), d_k from the controller's status of the state x_k "
              "(ControllerStatus.disturbance_estimate: empty, nothing removed, without an estimate); each step then "
              "needs that status like its command (lockstep rounds wait for it, a lost one is a missing step). "
              "false: targets keep the estimate, x_k+1 - F(x_k, u_k) (docs/LEARNING.md, Adapter node)"),
    ParamSpec("update_period", T.DOUBLE, 0.5, "s of (sim) time between training rounds", low=0.0, low_open=True),
    ParamSpec("steps_per_update", T.INT, 20, "training steps per round", low=1, high=MAX_COUNT),
    ParamSpec("round_delay", T.DOUBLE, 0.5, "s of (sim) time after a round's last state at which its result "
              "takes effect (lockstep: the controller waits for it there)", low=0.0),
    ParamSpec("trainer.eps", T.DOUBLE, 64.0, f"perturbation (qzo_ff: an integer in [1, {GUARD}], integer units; "
              "fg_fp32: float)", low=0.0, low_open=True),
    ParamSpec("trainer.lr", T.DOUBLE, 1e-2, "forward-gradient step size (float units)", low=0.0, low_open=True),
    ParamSpec("trainer.estimator", T.STRING, "projected", "forward-gradient estimator", choices=("projected", "sign")),
    ParamSpec("trainer.perturbations", T.INT, 1, "m perturbations per step", low=1, high=1000),
    ParamSpec("trainer.momentum", T.DOUBLE, 0.0, "momentum", low=0.0, high=1.0, high_open=True),
    ParamSpec("trainer.train", T.STRING, "all", "the weights trained", choices=TRAINABLE),
    ParamSpec("trainer.sparsity", T.DOUBLE, 0.0, "fraction of entries left unperturbed", low=0.0, high=1.0,
              high_open=True),
    ParamSpec("trainer.seed", T.INT, 0, "seed of the perturbations"),
    ParamSpec("trainer.distribution", T.STRING, "rademacher", "qzo_ff: perturbation entries (rademacher: +-1; "
              "gaussian: a rounded N(0, 1) clipped to the guard)", choices=("rademacher", "gaussian")),
    ParamSpec("trainer.guidance", T.DOUBLE, 0.0, "qzo_ff momentum-guided sampling: probability that an entry of the "
              "perturbation follows the sign of the running estimate", low=0.0, high=1.0, high_open=True),
    ParamSpec("trainer.sparse_by", T.STRING, "random", "qzo_ff: which entries `sparsity` leaves unperturbed (random; "
              "large / small: perturb only the largest / smallest |w|)", choices=("random", "large", "small")),
    ParamSpec("trainer.normalize", T.STRING, "none", "qzo_ff: normalization of the estimate (kernel: per output row "
              "by its weight RMS; tensor: ZO-Adam per tensor)", choices=("none", "kernel", "tensor")),
    ParamSpec("trainer.sharpness", T.INT, 0, "qzo_ff sharpness-aware perturbation: estimate at w + rho "
              "sign(previous estimate), rho in integer units (0 = off; rho + eps <= 256)", low=0, high=255),
    ParamSpec("rollback.on_violations", T.BOOL, True, "roll back when violations rise after an update",
              read_only=False),
    ParamSpec("rollback.window", T.INT, 50, "states compared before and after an update's due", low=1,
              high=MAX_COUNT, read_only=False),
)

ADAPTER = NodeSpec("adapter", (
    SYSTEM,
    *SETTINGS,
    ParamSpec("mode", T.STRING, "realtime", "lockstep: rounds wait for all their data and announce their results' "
              "due (the controller waits for them: reproducible); realtime: rounds use what arrived",
              choices=("lockstep", "realtime")),
    ParamSpec("nice", T.INT, 10, "raise this process's niceness by this much (0 = leave it; a learner never "
              "outranks the control loop)", low=0, high=19),
), families=(MODEL,))

# name -> (default, description) of each setting
PARAMETERS: dict[str, tuple[Any, str]] = {p.name: (p.default, p.description) for p in SETTINGS}
# Parameters every rclpy node may receive without declaring them.
IMPLICIT = ("use_sim_time", "start_type_description_service")
IMPLICIT_PREFIXES = ("model.", "qos_overrides.")


@dataclass(frozen=True)
class AdapterSettings:
    config: AdapterConfig
    dt: float
    model_file: str
    update_period: float  # s of (sim) time between training rounds
    steps_per_update: int
    round_delay: float = 0.5  # s of (sim) time from a round's data end to its result's due
    policy: RollbackPolicy = field(default_factory=RollbackPolicy)
    # targets.remove_disturbance: the controller's disturbance estimate is removed from the targets
    # (each step needs the controller's status: learning/rounds.py)
    remove_disturbance: bool = True

    def schedule(self) -> Schedule:
        return Schedule.of(self.dt, self.update_period, self.round_delay)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'trainer': {'eps': 8}} -> {'trainer.eps': 8}, as ROS flattens nested parameters."""
    if not isinstance(params, Mapping):
        where = prefix.rstrip(".") or "ros__parameters"
        raise ConfigError(f"{where}: expected a mapping of parameters, got {check.shown(params)}")
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def adapter_settings(values: Mapping[str, Any], where: str = "") -> AdapterSettings:
    """Settings from parameter values by name (missing names take the specs' defaults).

    Every value is checked for its type and range (SETTINGS), and names that are no parameter of
    the adapter node are rejected; errors name the parameter (after `where`, e.g. a file).
    """
    prefix = f"{where}: " if where else ""
    known = (*ADAPTER.names, *IMPLICIT)
    unknown = sorted(str(n) for n in values if n not in known and not str(n).startswith(IMPLICIT_PREFIXES))
    if unknown:
        raise ConfigError(f"{prefix}unknown adapter parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
    v = {p.name: p.validate(values.get(p.name, p.default), prefix + p.name) for p in SETTINGS}
    if v["batch_size"] > v["buffer_size"]:
        raise ConfigError(f"{prefix}batch_size: expected at most buffer_size ({v['buffer_size']}), "
                          f"got {v['batch_size']}: training would never start")
    if v["method"] == "qzo_ff" and not (v["trainer.eps"] == int(v["trainer.eps"]) and v["trainer.eps"] <= GUARD):
        raise ConfigError(f"{prefix}trainer.eps: expected an integer in [1, {GUARD}] for qzo_ff (integer units), "
                          f"got {v['trainer.eps']:g}")
    trainer = ForwardGradientConfig(
        eps=float(v["trainer.eps"]),
        lr=float(v["trainer.lr"]),
        estimator=cast(Estimator, str(v["trainer.estimator"])),
        perturbations=int(v["trainer.perturbations"]),
        momentum=float(v["trainer.momentum"]),
        train=cast(Trainable, str(v["trainer.train"])),
        sparsity=float(v["trainer.sparsity"]),
        seed=int(v["trainer.seed"]),
        distribution=cast(Distribution, str(v["trainer.distribution"])),
        guidance=float(v["trainer.guidance"]),
        sparse_by=cast(SparseBy, str(v["trainer.sparse_by"])),
        normalize=cast(Normalize, str(v["trainer.normalize"])),
        sharpness=int(v["trainer.sharpness"]),
    )
    config = AdapterConfig(
        method=cast(Method, str(v["method"])),
        buffer_size=int(v["buffer_size"]),
        val_every=int(v["val_every"]),
        batch_size=int(v["batch_size"]),
        margin=float(v["margin"]),
        min_val=int(v["min_val"]),
        trainer=trainer,
        bp_lr=float(v["bp_lr"]),
        seed=int(v["seed"]),
        outlier_scales=float(v["outlier_scales"]),
        diverge_factor=float(v["diverge_factor"]),
        min_lr_scale=float(v["min_lr_scale"]),
        checks=CheckConfig(horizon=int(v["check.horizon"]), window=int(v["check.window"]),
                           stride=int(v["check.stride"]), rollout_factor=float(v["check.rollout_factor"]),
                           jacobian_factor=float(v["check.jacobian_factor"]),
                           jacobian_limit=float(v["check.jacobian_limit"])),
    )
    config.validate()
    policy = RollbackPolicy(bool(v["rollback.on_violations"]), int(v["rollback.window"]))
    return AdapterSettings(config, float(v["dt"]), str(v["model_file"]), float(v["update_period"]),
                           int(v["steps_per_update"]), float(v["round_delay"]), policy,
                           bool(v["targets.remove_disturbance"]))


@dataclass
class BuiltAdapter:
    core: OnlineAdapter
    start: ResidualModel
    nominal: SymbolicModel
    settings: AdapterSettings


def build_adapter(values: Mapping[str, Any]) -> BuiltAdapter:
    """The learning core from the adapter node's parameter values (ADAPTER.resolve)."""
    settings = adapter_settings({name: values[name] for name in PARAMETERS})
    if not settings.model_file:
        raise ConfigError("parameter 'model_file' is required: the adapter fine-tunes a pretrained residual")
    nominal = model_of(values)
    start = load_model(settings.model_file, nominal.nx, nominal.nu)
    return BuiltAdapter(OnlineAdapter(start, nominal, settings.config), start, nominal, settings)
