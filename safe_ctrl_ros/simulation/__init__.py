"""The plant's ROS-free core: a stepping simulator and the lockstep protocol."""

from safe_ctrl_ros.simulation.lockstep import LockstepGate, TickAction
from safe_ctrl_ros.simulation.plant import EpisodeStats, PlantSim

__all__ = ["EpisodeStats", "LockstepGate", "PlantSim", "TickAction"]
