"""The plant's ROS-free core: stepping, command checks and the lockstep protocol."""

from __future__ import annotations

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.simulation import LockstepGate, PlantSim, TickAction


def test_plant_sim_integrates_with_integer_time() -> None:
    sim = PlantSim(systems.make("cartpole"), 0.02, 10, [0.0, 0.0, 0.1, 0.0])
    for _ in range(3):
        sim.advance(np.array([1.0]))
    assert sim.k == 3
    assert sim.t_ns == 60_000_000
    expected = np.array([0.0, 0.0, 0.1, 0.0])
    for _ in range(3):
        expected = sim.model.step(expected, [1.0], 0.02, 10)
    np.testing.assert_array_equal(sim.x, expected)


def test_commands_are_clipped_or_rejected_and_counted() -> None:
    sim = PlantSim(systems.make("cartpole"), 0.02, 1)
    np.testing.assert_array_equal(sim.check_command([50.0]), [10.0])
    assert sim.stats.clipped_commands == 1
    assert sim.check_command([1.0, 2.0]) is None
    assert sim.check_command([np.nan]) is None
    assert sim.stats.rejected_commands == 2


def test_none_holds_the_last_command() -> None:
    sim = PlantSim(systems.make("cartpole"), 0.02, 1)
    sim.advance(np.array([3.0]))
    sim.advance(None)
    np.testing.assert_array_equal(sim.u_last, [3.0])


def test_bad_initial_state_and_dt() -> None:
    with pytest.raises(ConfigError, match="initial_state"):
        PlantSim(systems.make("cartpole"), 0.02, 1, [0.0, 0.1])
    with pytest.raises(ConfigError, match="dt"):
        PlantSim(systems.make("cartpole"), 0.0, 1)


def test_lockstep_gate_resends_then_times_out() -> None:
    gate = LockstepGate(command_timeout=1.0, resend_period=0.1)
    assert gate.tick(0.0) is TickAction.NONE  # nothing sent yet
    gate.sent(20_000_000, now=10.0)
    assert not gate.accepts(0)
    assert gate.accepts(20_000_000)
    assert gate.tick(10.05) is TickAction.NONE
    assert gate.tick(10.11) is TickAction.RESEND
    assert gate.tick(10.15) is TickAction.NONE
    assert gate.tick(10.22) is TickAction.RESEND
    assert gate.tick(11.0) is TickAction.TIMEOUT
    assert gate.tick(11.5) is TickAction.NONE  # not waiting any more


def test_lockstep_gate_answered_stops_waiting() -> None:
    gate = LockstepGate(command_timeout=1.0, resend_period=0.1)
    gate.sent(0, now=0.0)
    gate.answered()
    assert gate.tick(5.0) is TickAction.NONE
    assert not gate.accepts(0)


def test_reset_keeps_time_running_when_asked() -> None:
    sim = PlantSim(systems.make("cartpole"), 0.02, 1, [0.0, 0.0, 0.1, 0.0])
    for _ in range(5):
        sim.advance(np.array([1.0]))
    sim.reset(keep_time=True)
    assert sim.k == 6
    np.testing.assert_array_equal(sim.x, [0.0, 0.0, 0.1, 0.0])
    assert sim.stats.steps == 0
    sim.reset([0.0, 0.0, 0.0, 0.0])
    assert sim.k == 0


def test_wrench_is_held_until_changed() -> None:
    sim = PlantSim(systems.make("cartpole"), 0.02, 1)
    sim.wrench = np.array([1.0, 0, 0, 0, 0, 0])
    sim.advance(np.array([0.0]))
    sim.advance(np.array([0.0]))
    expected = np.zeros(4)
    for _ in range(2):
        expected = sim.model.step(expected, [0.0], 0.02, 1, w=[1.0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(sim.x, expected)
