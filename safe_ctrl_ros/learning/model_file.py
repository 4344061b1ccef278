"""The residual model file (.npz): the 16w8a network plus what it needs to be used and trained.

Keys: system, dt, hidden, activation, in_gain, out_gain, weights (int16, tensor order W_1, b_1, ...),
scales (one per tensor), a_scale (activation scale per layer input), loss_scale (the per-state
normalization of the training loss), meta (JSON text: seed, data, losses); optional
previous_input (bool; written only when true, so files without the option are unchanged): the
residual's inputs are [x; u; u_prev] (safe_ctrl_ros.control.residual), in_gain has nx + 2 nu entries.
`extend_previous_input` turns a model without the option into one with it by zero weight columns
for u_prev: the same function, exactly (`safe-ctrl-pretrain --extend-previous-input FILE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safe_ctrl_ros.control.residual import ResidualSpec, zero_previous_columns
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.fixed_point import W_MAX, QuantizedMLP
from safe_ctrl_ros.systems import SYSTEM_NAMES
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
    arrays: dict[str, NDArray[Any]] = {
        "system": np.array(model.system), "dt": np.array(model.dt), "hidden": np.array(spec.hidden, dtype=np.int64),
        "activation": np.array(spec.activation), "in_gain": spec.in_gain, "out_gain": spec.out_gain,
        "weights": model.net.int_weights(), "scales": np.array(model.net.scales()),
        "a_scale": np.array(model.net.a_scale), "loss_scale": model.loss_scale,
        "meta": np.array(json.dumps(model.meta, sort_keys=True)),
    }
    if spec.previous_input:  # only then: a file without the option is byte for byte what it was
        arrays["previous_input"] = np.array(True)
    with file.open("wb") as fh:  # a file object: np.savez would otherwise add ".npz" to any name
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy types the keywords as allow_pickle


KEYS = ("system", "dt", "hidden", "activation", "in_gain", "out_gain", "weights", "scales", "a_scale", "loss_scale")
OPTIONAL = ("meta", "previous_input")
SCALE_RANGE = (1e-30, 1e30)  # quantization scales: their products and ratios stay far from 0 and inf


def _numbers(d: dict[str, NDArray[Any]], key: str, where: str, size: int | None = None,
             low: float | None = None, high: float | None = None, integer: bool = False) -> NDArray[Any]:
    """The numeric array `key`: 1-D (of `size` entries if given) or, with size 0, a scalar; checked."""
    arr = d[key]
    kinds = "iu" if integer else "iuf"
    scalar = size == 0
    what = ("an integer" if integer else "a finite number") if scalar else (
        f"{'' if size is None else size} {'integers' if integer else 'finite numbers'}".strip()
    )
    if low is not None:
        what += f" >= {low:g}" if high is None else f" in [{low:g}, {high:g}]"
    ok = arr.dtype.kind in kinds and (arr.ndim == 0 if scalar else arr.ndim == 1 and (size is None or arr.size == size))
    if ok and arr.dtype.kind == "f":
        ok = bool(np.all(np.isfinite(arr)))
    if ok and low is not None:
        ok = bool(np.all(arr >= low)) and (high is None or bool(np.all(arr <= high)))
    if not ok:
        shown = np.array2string(arr, threshold=6, precision=4) if arr.dtype.kind in "biuf" else repr(arr)
        raise ConfigError(f"{where}: key '{key}': expected {what}, got {arr.dtype} {arr.shape} {shown}")
    return arr


def _text(d: dict[str, NDArray[Any]], key: str, where: str) -> str:
    arr = d[key]
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise ConfigError(f"{where}: key '{key}': expected text, got {arr.dtype} {arr.shape}")
    return str(arr)


def load_model(path: str | Path, nx: int | None = None, nu: int | None = None) -> ResidualModel:
    """Load and check a model file: every key's type, size and range; errors name the file and key."""
    file = Path(path)
    where = f"residual model file '{file}'"
    if not file.is_file():
        raise ConfigError(f"{where} does not exist")
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ConfigError("not an .npz archive (np.savez)")
        with loaded as data:
            d = {k: data[k] for k in data.files}
    except Exception as exc:  # numpy and zipfile raise many kinds on a damaged file
        raise ConfigError(f"{where} cannot be read: {exc}") from exc
    unknown = set(d) - {*KEYS, *OPTIONAL}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted([*KEYS, *OPTIONAL])}")
    missing = set(KEYS) - set(d)
    if missing:
        raise ConfigError(f"{where} lacks {sorted(missing)}")
    system = _text(d, "system", where)
    if system not in SYSTEM_NAMES:
        raise ConfigError(f"{where}: key 'system': expected one of {SYSTEM_NAMES}, got '{system}'")
    dt = float(_numbers(d, "dt", where, 0, low=1e-9))
    out_gain = _numbers(d, "out_gain", where).astype(np.float64)
    in_gain = _numbers(d, "in_gain", where).astype(np.float64)
    previous = False
    if "previous_input" in d:
        flag = d["previous_input"]
        if flag.dtype.kind != "b" or flag.ndim != 0:
            raise ConfigError(f"{where}: key 'previous_input': expected a boolean, got {flag.dtype} {flag.shape}")
        previous = bool(flag)
    n_x = out_gain.size
    n_u, rest = divmod(in_gain.size - n_x, 2 if previous else 1)
    if n_x < 1 or n_u < 1 or rest:
        inputs = "nx + 2 nu (previous_input)" if previous else "nx + nu"
        raise ConfigError(f"{where}: keys 'in_gain', 'out_gain': expected {inputs} and nx >= 1 numbers with nu >= 1, "
                          f"got {in_gain.size} and {n_x}")
    if (nx is not None and nx != n_x) or (nu is not None and nu != n_u):
        raise ConfigError(f"{where} is for nx={n_x}, nu={n_u} (sizes of 'out_gain', 'in_gain'); "
                          f"expected nx={nx}, nu={nu}")
    hidden = tuple(int(h) for h in _numbers(d, "hidden", where, low=1, high=4096, integer=True))
    activation = _text(d, "activation", where)
    try:
        spec = ResidualSpec(n_x, n_u, hidden, activation, in_gain, out_gain, previous)
    except ConfigError as exc:
        raise ConfigError(f"{where}: key 'activation': {exc}") from exc
    n_tensors = 2 * len(spec.shapes)
    weights = _numbers(d, "weights", where, spec.num_params, -W_MAX, W_MAX, integer=True)
    scales = _numbers(d, "scales", where, n_tensors, *SCALE_RANGE)
    a_scale = _numbers(d, "a_scale", where, len(spec.shapes), *SCALE_RANGE)
    loss_scale = _numbers(d, "loss_scale", where, n_x, low=1e-12).astype(np.float64)
    try:
        net = QuantizedMLP.from_update(spec, weights, scales, a_scale)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    meta: Any = {}
    if "meta" in d:
        try:
            meta = json.loads(_text(d, "meta", where))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: key 'meta': expected JSON text, got {exc}") from exc
        if not isinstance(meta, dict):
            raise ConfigError(f"{where}: key 'meta': expected a JSON object, got {type(meta).__name__}")
    return ResidualModel(system, dt, net, loss_scale, meta)


def extend_previous_input(model: ResidualModel) -> ResidualModel:
    """The model with u_prev inputs added (ResidualSpec.previous_input): zero integer weight columns
    for them (in_gain as u's), every other tensor and scale as it was, so its outputs (integer and
    float) are exactly the model's for any u_prev. A model that has the option is returned as is."""
    spec = model.net.spec
    if spec.previous_input:
        return model
    net = model.net
    w = [zero_previous_columns(spec, net.w[0]), *(t.copy() for t in net.w[1:])]
    extended = QuantizedMLP(spec.with_previous_input(), w, [b.copy() for b in net.b], list(net.w_scale),
                            list(net.b_scale), list(net.a_scale))
    meta = {**model.meta, "previous_input": "extended by zero weight columns (extend_previous_input)"}
    return ResidualModel(model.system, model.dt, extended, model.loss_scale.copy(), meta)
