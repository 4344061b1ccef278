"""The adapter's settings by parameter name: one table for the node and the offline re-trainer.

The adapter node declares every entry of PARAMETERS as a ROS parameter (default and description
from here); `safe-ctrl-retrain` reads the same names from a params file. `adapter_settings` turns
either into the core's configuration, so a setting tried offline on a bag means the same on board.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from safe_ctrl_ros import config_check as check
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import METHODS, AdapterConfig, Method
from safe_ctrl_ros.learning.fixed_point import GUARD
from safe_ctrl_ros.learning.trainers import Estimator, ForwardGradientConfig, Trainable

# name -> (default, description)
PARAMETERS: dict[str, tuple[Any, str]] = {
    "dt": (0.02, "control period in seconds (transitions are one period)"),
    "model_file": ("", "the starting residual model (.npz, safe-ctrl-pretrain)"),
    "method": ("qzo_ff", f"one of {METHODS}"),
    "buffer_size": (2000, "training transitions kept"),
    "val_every": (5, "every n-th transition is held out for validation"),
    "batch_size": (128, "transitions per training step"),
    "margin": (0.02, "relative validation improvement needed to publish"),
    "min_val": (20, "validation transitions needed before training"),
    "bp_lr": (1e-3, "Adam learning rate of the backprop baseline"),
    "seed": (0, "seed of the batch sampling"),
    "outlier_scales": (50.0, "drop transitions beyond this many loss scales; 0 = keep all"),
    "diverge_factor": (3.0, "restart from the newest version, at half the step size, when the validation "
                            "loss exceeds this many times the best; 0 = never"),
    "update_period": (0.5, "s of (sim) time between training rounds"),
    "steps_per_update": (20, "training steps per round"),
    "trainer.eps": (64.0, "perturbation (QZO-FF: integer units; fp32: float)"),
    "trainer.lr": (1e-2, "forward-gradient step size (float units)"),
    "trainer.estimator": ("projected", "projected | sign"),
    "trainer.perturbations": (1, "m perturbations per step"),
    "trainer.momentum": (0.0, "momentum in [0, 1)"),
    "trainer.train": ("all", "all | last_layer | biases"),
    "trainer.sparsity": (0.0, "fraction of entries left unperturbed"),
    "trainer.seed": (0, "seed of the perturbations"),
}


@dataclass(frozen=True)
class AdapterSettings:
    config: AdapterConfig
    dt: float
    model_file: str
    update_period: float  # s of (sim) time between training rounds
    steps_per_update: int


# Parameters of the adapter node that are not settings (the model, rollback, rclpy's own): a params
# file section may hold them; any other name is a typo.
NODE_PARAMETERS = ("system", "rollback.on_violations", "rollback.window", "nice", "use_sim_time",
                   "start_type_description_service")
NODE_PREFIXES = ("model.", "qos_overrides.")
MAX_COUNT = 1_000_000  # buffers are allocated up front: a mistyped 2e9 must not exhaust memory


def _positive(v: Any, w: str) -> float:
    return check.number(v, w, 0.0, low_open=True)


def _unit(v: Any, w: str) -> float:
    return check.number(v, w, 0.0, 1.0, high_open=True)


# name -> the check of its value (a ConfigError names the parameter and the expected type or range)
_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "dt": _positive,
    "model_file": check.text,
    "method": lambda v, w: check.choice(v, METHODS, w),
    "buffer_size": lambda v, w: check.integer(v, w, 10, MAX_COUNT),
    "val_every": lambda v, w: check.integer(v, w, 2, MAX_COUNT),
    "batch_size": lambda v, w: check.integer(v, w, 1, MAX_COUNT),
    "margin": _unit,
    "min_val": lambda v, w: check.integer(v, w, 1, MAX_COUNT),
    "bp_lr": _positive,
    "seed": check.integer,
    "outlier_scales": lambda v, w: check.number(v, w, 0.0),
    "diverge_factor": lambda v, w: 0.0 if check.number(v, w, 0.0) == 0 else check.number(v, w, 1.0, low_open=True),
    "update_period": _positive,
    "steps_per_update": lambda v, w: check.integer(v, w, 1, MAX_COUNT),
    "trainer.eps": _positive,
    "trainer.lr": _positive,
    "trainer.estimator": lambda v, w: check.choice(v, ("projected", "sign"), w),
    "trainer.perturbations": lambda v, w: check.integer(v, w, 1, 1000),
    "trainer.momentum": _unit,
    "trainer.train": lambda v, w: check.choice(v, ("all", "last_layer", "biases"), w),
    "trainer.sparsity": _unit,
    "trainer.seed": check.integer,
}


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
    """Settings from parameter values by name (missing names take PARAMETERS' defaults).

    Every value is checked for its type and range, and names that are neither settings nor other
    adapter-node parameters are rejected; errors name the parameter (after `where`, e.g. a file).
    """
    prefix = f"{where}: " if where else ""
    known = (*PARAMETERS, *NODE_PARAMETERS)
    unknown = sorted(str(n) for n in values if n not in known and not str(n).startswith(NODE_PREFIXES))
    if unknown:
        raise ConfigError(f"{prefix}unknown adapter parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
    v = {name: _CHECKS[name](values.get(name, default), prefix + name) for name, (default, _) in PARAMETERS.items()}
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
    )
    config.validate()
    return AdapterSettings(config, float(v["dt"]), str(v["model_file"]), float(v["update_period"]),
                           int(v["steps_per_update"]))
