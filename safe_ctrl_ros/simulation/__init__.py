"""The plant's ROS-free core: a stepping simulator, the episode (draw, step, termination), the
watchdog, the lockstep protocol, real-time loop timing, and the loop that ties them together."""

from safe_ctrl_ros.simulation.episode import Episode, StepResult
from safe_ctrl_ros.simulation.lockstep import LockstepGate, TickAction
from safe_ctrl_ros.simulation.loop import (
    LockstepLoop,
    LogLevel,
    LoopConfig,
    PlantLoop,
    PlantOutput,
    Publish,
    RealtimeLoop,
    make_loop,
)
from safe_ctrl_ros.simulation.plant import EpisodeStats, PlantSim
from safe_ctrl_ros.simulation.timing import LogHistogram, RealtimeTiming
from safe_ctrl_ros.simulation.watchdog import Watchdog, WatchdogEvent, safe_command

__all__ = [
    "Episode",
    "EpisodeStats",
    "LockstepGate",
    "LockstepLoop",
    "LogHistogram",
    "LogLevel",
    "LoopConfig",
    "PlantLoop",
    "PlantOutput",
    "PlantSim",
    "Publish",
    "RealtimeLoop",
    "RealtimeTiming",
    "StepResult",
    "TickAction",
    "Watchdog",
    "WatchdogEvent",
    "make_loop",
    "safe_command",
]
