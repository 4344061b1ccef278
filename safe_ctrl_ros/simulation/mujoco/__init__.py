"""The MuJoCo plant: MJCF models of the cart-pole and the quadrotors (models/*.xml, package data),
the exact map from the symbolic state to MuJoCo's, the effects the symbolic models lack, and
`MujocoPlantSim`, a `PlantSim` on MuJoCo (the plant node's `engine: mujoco`).

The settings and the MJCF/state mapping import without MuJoCo; `MujocoPlantSim` (and the renderer)
need the `mujoco` package (requirements/runtime.txt), imported only when the engine is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from safe_ctrl_ros.simulation.mujoco.mjcf import SYSTEMS, from_mujoco, mjcf_text, model_path, to_mujoco
from safe_ctrl_ros.simulation.mujoco.settings import INTEGRATORS, MujocoSettings

if TYPE_CHECKING:
    from safe_ctrl_ros.simulation.mujoco.plant import MujocoPlantSim


def __getattr__(name: str) -> Any:
    if name == "MujocoPlantSim":
        from safe_ctrl_ros.simulation.mujoco.plant import MujocoPlantSim

        return MujocoPlantSim
    raise AttributeError(name)


__all__ = [
    "INTEGRATORS",
    "SYSTEMS",
    "MujocoPlantSim",
    "MujocoSettings",
    "from_mujoco",
    "mjcf_text",
    "model_path",
    "to_mujoco",
]
