"""The plant's ROS-free core: a stepping simulator, the lockstep protocol and real-time loop timing."""

from safe_ctrl_ros.simulation.lockstep import LockstepGate, TickAction
from safe_ctrl_ros.simulation.plant import EpisodeStats, PlantSim
from safe_ctrl_ros.simulation.timing import LogHistogram, RealtimeTiming

__all__ = ["EpisodeStats", "LockstepGate", "LogHistogram", "PlantSim", "RealtimeTiming", "TickAction"]
