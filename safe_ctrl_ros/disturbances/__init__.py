"""Repeatable disturbances: signals (impulse, step, uniform, white noise, periodic) and scenarios."""

from safe_ctrl_ros.disturbances.kinds import KINDS, Signal
from safe_ctrl_ros.disturbances.scenario import (
    TARGETS,
    Disturbance,
    Scenario,
    generator_for,
    load_scenario,
    make_scenario,
)

__all__ = ["KINDS", "TARGETS", "Disturbance", "Scenario", "Signal", "generator_for", "load_scenario", "make_scenario"]
