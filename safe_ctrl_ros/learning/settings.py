"""The adapter's settings by parameter name: one table for the node and the offline re-trainer.

The adapter node declares every entry of PARAMETERS as a ROS parameter (default and description
from here); `safe-ctrl-retrain` reads the same names from a params file. `adapter_settings` turns
either into the core's configuration, so a setting tried offline on a bag means the same on board.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from safe_ctrl_ros.learning.adapter import METHODS, AdapterConfig, Method
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
    "update_period": (0.5, "s of (sim) time between training rounds"),
    "steps_per_update": (20, "training steps per round"),
    "trainer.eps": (16.0, "perturbation (QZO-FF: integer units; fp32: float)"),
    "trainer.lr": (1e-3, "forward-gradient step size (float units)"),
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


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'trainer': {'eps': 8}} -> {'trainer.eps': 8}, as ROS flattens nested parameters."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def adapter_settings(values: Mapping[str, Any]) -> AdapterSettings:
    """Settings from parameter values by name (missing names take PARAMETERS' defaults)."""
    v = {name: values.get(name, default) for name, (default, _) in PARAMETERS.items()}
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
    )
    config.validate()
    return AdapterSettings(config, float(v["dt"]), str(v["model_file"]), float(v["update_period"]),
                           int(v["steps_per_update"]))
