"""The residual model file (.npz): the 16w8a network plus what it needs to be used and trained.

Keys: system, dt, hidden, activation, in_gain, out_gain, weights (int16, tensor order W_1, b_1, ...),
scales (one per tensor), a_scale (activation scale per layer input), loss_scale (the per-state
normalization of the training loss), meta (JSON text: seed, data, losses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.systems.base import FloatArray


@dataclass
class ResidualModel:
    system: str
    dt: float
    net: QuantizedMLP
    loss_scale: FloatArray
    meta: dict[str, Any]


def save_model(path: str | Path, model: ResidualModel) -> None:
    spec = model.net.spec
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("wb") as fh:  # a file object: np.savez would otherwise add ".npz" to any name
        np.savez(
            fh,
            system=np.array(model.system), dt=np.array(model.dt), hidden=np.array(spec.hidden, dtype=np.int64),
            activation=np.array(spec.activation), in_gain=spec.in_gain, out_gain=spec.out_gain,
            weights=model.net.int_weights(), scales=np.array(model.net.scales()),
            a_scale=np.array(model.net.a_scale), loss_scale=model.loss_scale,
            meta=np.array(json.dumps(model.meta, sort_keys=True)),
        )


def load_model(path: str | Path, nx: int | None = None, nu: int | None = None) -> ResidualModel:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"residual model file '{file}' does not exist")
    try:
        with np.load(file, allow_pickle=False) as data:
            d = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"residual model file '{file}' cannot be read: {exc}") from exc
    missing = {"system", "dt", "hidden", "activation", "in_gain", "out_gain", "weights", "scales", "a_scale",
               "loss_scale"} - set(d)
    if missing:
        raise ConfigError(f"residual model file '{file}' lacks {sorted(missing)}")
    out_gain = np.asarray(d["out_gain"], dtype=np.float64)
    in_gain = np.asarray(d["in_gain"], dtype=np.float64)
    n_x = out_gain.size
    n_u = in_gain.size - n_x
    if (nx is not None and nx != n_x) or (nu is not None and nu != n_u):
        raise ConfigError(f"residual model file '{file}' is for nx={n_x}, nu={n_u}; expected nx={nx}, nu={nu}")
    spec = ResidualSpec(n_x, n_u, tuple(int(h) for h in d["hidden"]), str(d["activation"]), in_gain, out_gain)
    try:
        net = QuantizedMLP.from_update(spec, d["weights"], d["scales"], d["a_scale"])
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"residual model file '{file}': {exc}") from exc
    meta = json.loads(str(d["meta"])) if "meta" in d else {}
    return ResidualModel(str(d["system"]), float(d["dt"]), net, np.asarray(d["loss_scale"], dtype=np.float64), meta)
