"""Plant models: `make(name, **param_overrides)` returns a `SymbolicModel`.

Systems follow safe-control-gym's state/input ordering and default parameters (docs/SYSTEMS.md).
Each model says which state entries are positions (m) and angles (rad): `position_indices`,
`angle_indices`; `position_error(model, x, ref)` and `angle_error(model, x, ref)` measure them.
"""

from __future__ import annotations

from collections.abc import Callable

from safe_ctrl_ros.errors import UnknownSystemError
from safe_ctrl_ros.systems import cartpole, quadrotor
from safe_ctrl_ros.systems.base import ParamSpec, SymbolicModel, angle_error, position_error

_FACTORIES: dict[str, Callable[..., SymbolicModel]] = {
    "cartpole": cartpole.make,
    "quadrotor_1d": quadrotor.make_1d,
    "quadrotor_2d": quadrotor.make_2d,
    "quadrotor_3d": quadrotor.make_3d,
}

_PARAMS: dict[str, dict[str, ParamSpec]] = {
    "cartpole": cartpole.PARAMS,
    "quadrotor_1d": quadrotor.PARAMS,
    "quadrotor_2d": quadrotor.PARAMS,
    "quadrotor_3d": quadrotor.PARAMS,
}

SYSTEM_NAMES: tuple[str, ...] = tuple(sorted(_FACTORIES))


def _unknown(name: str) -> UnknownSystemError:
    return UnknownSystemError(f"unknown system '{name}'; known systems: {', '.join(SYSTEM_NAMES)}")


def param_specs(name: str) -> dict[str, ParamSpec]:
    """The physical parameters of system `name` with their defaults and meaning."""
    if name not in _PARAMS:
        raise _unknown(name)
    return dict(_PARAMS[name])


def make(name: str, **param_overrides: object) -> SymbolicModel:
    """Build the model `name` with defaults replaced by `param_overrides` (validated)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise _unknown(name) from None
    return factory(**param_overrides)


def with_state_size(nx: int) -> list[str]:
    """The systems whose state has `nx` entries (for data that does not name its system)."""
    return [name for name in SYSTEM_NAMES if make(name).nx == nx]


__all__ = [
    "SYSTEM_NAMES", "ParamSpec", "SymbolicModel", "angle_error", "make", "param_specs", "position_error",
    "with_state_size",
]
