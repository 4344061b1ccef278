"""The plant's ROS-free loop: the episode, the watchdog and both steppers, driven by a scripted clock.

No DDS and no measured time: a fake output records what the plant would publish and report, and
every wall time is made up, so each behaviour is checked exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.parameters.plant import PLANT, build_plant
from safe_ctrl_ros.safety.monitor import Level
from safe_ctrl_ros.simulation import (
    Episode,
    LockstepLoop,
    LogLevel,
    PlantLoop,
    PlantSim,
    RealtimeLoop,
    Watchdog,
    safe_command,
)
from safe_ctrl_ros.systems.base import FloatArray

DT = 0.02
DT_NS = 20_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A PlantOutput that keeps everything; `subs`/`pubs` play the DDS graph."""

    def __init__(self) -> None:
        self.subs, self.pubs = 1, 1
        self.clocks: list[int] = []
        self.states: list[tuple[int, FloatArray]] = []
        self.references: list[int] = []
        self.logs: list[tuple[LogLevel, str]] = []
        self.diags: list[tuple[Level, str, dict[str, str]]] = []
        self.summary: dict[str, Any] | None = None

    def clock(self, t_ns: int) -> None:
        self.clocks.append(t_ns)

    def state(self, t_ns: int, x: FloatArray) -> None:
        self.states.append((t_ns, x.copy()))

    def reference(self, t_ns: int, x_ref: FloatArray, u_ref: FloatArray) -> None:
        self.references.append(t_ns)

    def graph(self) -> tuple[int, int]:
        return self.subs, self.pubs

    def log(self, level: LogLevel, message: str) -> None:
        self.logs.append((level, message))

    def diagnostics(self, level: Level, message: str, values: dict[str, str]) -> None:
        self.diags.append((level, message, values))

    def finished(self, summary: dict[str, object]) -> None:
        self.summary = summary


def make(clock: FakeClock, out: Recorder | None = None, **params: Any) -> tuple[PlantLoop, Recorder]:
    rec = out or Recorder()
    return build_plant(PLANT.resolve(params), rec, clock), rec


def levels(rec: Recorder, level: LogLevel) -> int:
    return sum(1 for lv, _ in rec.logs if lv is level)


# --- the episode -------------------------------------------------------------------------------------
def test_episode_draws_are_seeded_and_uniform_within_the_spread() -> None:
    sim = PlantSim(systems.make("cartpole"), DT, 1, [0.0, 0.0, 0.1, 0.0])
    a, b = Episode(sim, [0.1, 0.0, 0.05, 0.0], seed=3), Episode(sim, [0.1, 0.0, 0.05, 0.0], seed=3)
    draws = [a.draw() for _ in range(50)]
    np.testing.assert_array_equal(draws[0], b.draw())
    spread = np.abs(np.array(draws) - [0.0, 0.0, 0.1, 0.0])
    assert np.all(spread <= [0.1, 0.0, 0.05, 0.0])
    a.seed(3)
    np.testing.assert_array_equal(a.draw(), draws[0])  # reseeding repeats the draws
    with pytest.raises(ConfigError, match="init_randomization: half-widths must be >= 0"):
        Episode(sim, [0.1, -0.1, 0.0, 0.0])
    with pytest.raises(ConfigError, match="init_randomization: expected a vector of size 4"):
        Episode(sim, [0.1])


def test_episode_ends_on_time_in_whole_periods() -> None:
    sim = PlantSim(systems.make("cartpole"), DT, 1)
    ep = Episode(sim, duration=0.18)
    ep.reset()
    results = [ep.step(np.zeros(1)) for _ in range(9)]
    assert [r.truncated for r in results] == [False] * 8 + [True]
    assert results[-1].terminated == ""
    ep.reset(keep_time=True)  # a new episode counts its own steps
    assert ep.steps == 0
    assert sim.k == 10


def test_episode_terminates_out_of_bounds_only_when_asked() -> None:
    sim = PlantSim(systems.make("cartpole"), DT, 10, [0.0, 0.0, 1.5, 0.0])
    stop, go_on = Episode(sim), Episode(PlantSim(systems.make("cartpole"), DT, 10, [0.0, 0.0, 1.5, 0.0]),
                                        stop_on_out_of_bounds=False)
    stop.reset()
    go_on.reset()
    r = next(r for r in iter(lambda: stop.step(np.zeros(1)), None) if r.ended)
    assert r.out_of_bounds == ["theta"]
    assert r.finite
    assert r.terminated.startswith("state out of bounds in ['theta']: ")
    assert stop.terminated == r.terminated
    for _ in range(stop.steps):
        r2 = go_on.step(np.zeros(1))
    assert r2.out_of_bounds == ["theta"]
    assert not r2.ended  # it runs on


def test_episode_terminates_on_a_non_finite_state() -> None:
    sim = PlantSim(systems.make("cartpole"), DT, 1)
    ep = Episode(sim, stop_on_out_of_bounds=False)
    ep.reset()
    sim.x = np.array([0.0, np.nan, 0.0, 0.0])
    r = ep.check()
    assert not r.finite
    assert r.ended
    assert r.terminated == "non-finite state [0.0, nan, 0.0, 0.0]"


# --- the watchdog ------------------------------------------------------------------------------------
def test_watchdog_engages_counts_and_releases() -> None:
    dog = Watchdog(0.5, np.array([0.0]))
    dog.fresh(10.0)
    u = np.array([1.0])
    assert dog.apply(10.4, u) == (u, None)  # fresh enough
    applied, event = dog.apply(10.6, u)
    np.testing.assert_array_equal(applied, [0.0])
    assert event is not None
    assert event.engaged
    assert event.silent_s == pytest.approx(0.6)
    assert dog.apply(10.7, u)[1] is None  # reported once
    assert dog.safe_steps == 2
    dog.fresh(10.8)
    applied, event = dog.apply(10.8, u)
    assert applied is u
    assert event is not None
    assert not event.engaged
    assert event.safe_steps == 2
    assert (dog.engagements, dog.releases, dog.active) == (1, 1, False)


def test_watchdog_follows_an_explicit_timeout() -> None:
    dog = Watchdog(1.0, np.array([0.0]))
    dog.fresh(0.0)
    applied, event = dog.apply(0.1, None, timed_out=True)  # lockstep: the state went unanswered
    np.testing.assert_array_equal(applied, [0.0])
    assert event is not None
    assert event.engaged
    u = np.array([2.0])
    assert dog.apply(5.0, u, timed_out=False)[0] is u  # a fresh answer, however late the step
    assert dog.releases == 1


def test_safe_command_defaults_to_the_equilibrium_input_within_the_bounds() -> None:
    quad = systems.make("quadrotor_2d")
    np.testing.assert_array_equal(safe_command(quad), quad.equilibrium()[1])
    np.testing.assert_array_equal(safe_command(systems.make("cartpole"), [2.0]), [2.0])
    with pytest.raises(ConfigError, match=r"'safe_command': \[50.0\] is outside the input bounds"):
        safe_command(systems.make("cartpole"), [50.0])
    with pytest.raises(ConfigError, match="'command_timeout': must be > 0"):
        Watchdog(0.0, np.zeros(1))


# --- lockstep ----------------------------------------------------------------------------------------
def test_lockstep_loop_is_the_core_simulation_bit_for_bit() -> None:
    clock = FakeClock()
    x0 = [0.0, 0.0, 0.1, 0.0]
    loop, rec = make(clock, initial_state=x0, duration=1.0)
    assert isinstance(loop, LockstepLoop)
    model = systems.make("cartpole")
    law = LqrController(model, [1.0, 1.0, 10.0, 1.0], 0.1, DT)
    loop.tick(clock.now)  # the graph is ready: the initial state goes out
    while rec.summary is None:
        t_ns, x = rec.states[-1]
        clock.now += 0.001
        loop.command(t_ns, law(x), clock.now)
    sim = PlantSim(model, DT, 10, x0)
    for _ in range(50):
        sim.advance(law(sim.x))
    np.testing.assert_array_equal(rec.states[-1][1], sim.x)
    assert [t for t, _ in rec.states] == [k * DT_NS for k in range(51)]
    assert rec.references == rec.clocks  # every new state and the final one carry the reference
    assert rec.summary["steps"] == 50
    assert rec.summary["terminated"] == ""
    assert rec.summary["missed_deadlines"] == rec.summary["resends"] == 0
    assert rec.summary["wall_time_s"] == pytest.approx(0.05)
    assert rec.diags[-1][:2] == (Level.OK, "episode finished")
    loop.tick(clock.now + 1.0)
    assert len(rec.states) == 51  # nothing moves after the end


def test_lockstep_ignores_commands_for_other_stamps_and_counts_bad_ones() -> None:
    clock = FakeClock()
    loop, rec = make(clock)
    loop.command(0, np.zeros(1), clock.now)  # before the start: not used
    loop.tick(clock.now)
    loop.command(DT_NS, np.zeros(1), clock.now)  # not the state waited for
    assert loop.sim.k == 0
    loop.command(0, np.array([np.nan]), clock.now)
    loop.command(0, np.array([1.0, 2.0]), clock.now)
    assert loop.sim.stats.rejected_commands == 2
    assert loop.sim.k == 0
    loop.command(0, np.array([50.0]), clock.now)
    assert loop.sim.k == 1
    np.testing.assert_array_equal(loop.sim.u_last, [10.0])  # clipped to the input bounds
    assert loop.sim.stats.clipped_commands == 1
    assert levels(rec, LogLevel.ERROR) == 1  # the two rejections within a second: reported once
    clock.now += 1.0
    loop.command(DT_NS, np.array([np.nan]), clock.now)
    assert levels(rec, LogLevel.ERROR) == 2


def test_lockstep_resends_then_steps_on_the_safe_command_and_releases() -> None:
    clock = FakeClock()
    loop, rec = make(clock, command_timeout=0.5, resend_period=0.1, safe_command=[1.5])
    loop.tick(clock.now)
    loop.command(0, np.zeros(1), clock.now)  # the first answer closes the loop
    sent = clock.now
    for dt in (0.05, 0.11, 0.15, 0.22):
        clock.now = sent + dt
        loop.tick(clock.now)
    assert loop.sim.stats.resends == 2
    assert [t for t, _ in rec.states[-2:]] == [DT_NS, DT_NS]  # the same state again
    clock.now = sent + 0.5
    loop.tick(clock.now)  # unanswered for command_timeout: stepped on the safe command
    assert loop.sim.k == 2
    np.testing.assert_array_equal(loop.sim.u_last, [1.5])
    assert loop.sim.stats.missed_deadlines == 1
    assert loop.watchdog.safe_steps == 1
    assert [d[:2] for d in rec.diags] == [
        (Level.WARN, "missing deadlines"), (Level.ERROR, "no fresh command for 0.500 s: safe command [1.5]")
    ]
    loop.command(2 * DT_NS, np.array([0.25]), clock.now)  # commands are back
    np.testing.assert_array_equal(loop.sim.u_last, [0.25])
    assert (loop.watchdog.engagements, loop.watchdog.releases) == (1, 1)
    assert rec.diags[-1][:2] == (Level.WARN, "commands are back (watchdog released)")
    summary = loop.summary()
    assert (summary["safe_command_steps"], summary["watchdog_engagements"], summary["watchdog_releases"]) == (1, 1, 1)


def test_lockstep_waits_for_the_first_answer_without_stepping_then_gives_up() -> None:
    clock = FakeClock()
    loop, rec = make(clock, command_timeout=1.0, startup_timeout=2.5)
    loop.tick(clock.now)
    start = clock.now
    for k in range(1, 400):  # a controller that never answers (still building its solver)
        clock.now = start + 0.01 * k
        loop.tick(clock.now)
        if rec.summary is not None:
            break
    assert loop.sim.k == 0  # no step on the safe command before the stack answered once
    assert loop.watchdog.safe_steps == 0
    assert rec.summary is not None
    assert rec.summary["terminated"] == "no command for the initial state within 2.5 s"
    assert clock.now == pytest.approx(start + 3.0)  # the timeout is checked at each command_timeout
    assert loop.finished


def test_a_plant_without_a_controller_gives_up_after_the_startup_timeout() -> None:
    clock = FakeClock()
    out = Recorder()
    out.pubs = 0  # nobody publishes commands
    loop, rec = make(clock, out, startup_timeout=1.0)
    clock.now += 0.9
    loop.tick(clock.now)
    assert rec.summary is None
    clock.now += 0.2
    loop.tick(clock.now)
    assert rec.summary is not None
    assert rec.summary["terminated"] == (
        "no controller after 1.0 s: plant/state has 1 of 1 subscriber(s), plant/cmd 0 publisher(s)"
    )
    assert rec.summary["wall_time_s"] == 0.0  # it never started
    assert rec.states == []


def test_autostart_off_waits_for_start() -> None:
    clock = FakeClock()
    loop, rec = make(clock, autostart=False, startup_timeout=1.0)
    clock.now += 5.0
    loop.tick(clock.now)
    assert rec.states == []
    assert rec.summary is None
    loop.periodic_diagnostics()
    assert rec.diags[-1][:2] == (Level.OK, "waiting for ~/start")
    assert loop.start() == (True, "starting when the graph is ready")
    loop.tick(clock.now)
    assert [t for t, _ in rec.states] == [0]
    assert loop.start() == (False, "already running")


def test_wrench_lockstep_waits_for_the_wrench_of_the_step() -> None:
    clock = FakeClock()
    loop, rec = make(clock, wrench_lockstep=True)
    loop.tick(clock.now)
    loop.command(0, np.zeros(1), clock.now)
    assert loop.sim.k == 0  # the wrench for t=0 is not in yet
    loop.wrench(0, np.array([1.0, 0.0, 0.0, 0.0, 0.0, 5.0]), clock.now)
    assert loop.sim.k == 1
    np.testing.assert_array_equal(loop.sim.wrench, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # tz: not modelled
    assert loop.ignored_wrench_axes == {"tz"}
    loop.wrench(DT_NS, np.array([0.0, 0.0, 0.0, 0.0, 0.0, 5.0]), clock.now)
    assert levels(rec, LogLevel.WARNING) == 1  # an ignored axis is reported once
    loop.wrench(DT_NS, np.array([np.nan, 0.0, 0.0, 0.0, 0.0, 0.0]), clock.now)
    np.testing.assert_array_equal(loop.sim.wrench, [0.0] * 6)  # the last good wrench stays


def test_reset_draws_a_new_state_and_time_runs_on() -> None:
    clock = FakeClock()
    loop, rec = make(clock, init_randomization=[0.1, 0.0, 0.1, 0.0], seed=4)
    expected = Episode(PlantSim(systems.make("cartpole"), DT, 10), [0.1, 0.0, 0.1, 0.0], seed=4)
    first = expected.draw()
    np.testing.assert_array_equal(loop.sim.x, first)
    loop.tick(clock.now)
    for k in range(3):
        loop.command(k * DT_NS, np.zeros(1), clock.now)
    assert loop.reset() == (True, f"reset to {expected.draw().tolist()}")
    assert loop.sim.k == 4  # one period on: the reset state has a stamp of its own
    assert loop.sim.stats.steps == 0
    assert rec.states[-1][0] == 4 * DT_NS
    loop.command(3 * DT_NS, np.zeros(1), clock.now)  # an answer to the old episode
    assert loop.sim.k == 4


def test_model_changes_take_effect_on_the_next_step() -> None:
    clock = FakeClock()
    loop, _ = make(clock, system="quadrotor_1d", initial_state=[1.0, 0.0])
    hover = loop.sim.model.equilibrium()[1]
    loop.tick(clock.now)
    loop.command(0, hover, clock.now)
    assert loop.sim.x[1] == 0.0
    loop.set_model(systems.make("quadrotor_1d", mass=loop.sim.model.params["mass"] * 1.3), {"model.mass": 1.3})
    loop.command(DT_NS, hover, clock.now)
    assert loop.sim.x[1] < 0  # heavier at hover thrust: it sinks


# --- real time ---------------------------------------------------------------------------------------
def test_realtime_loop_warms_up_then_steps_every_tick_with_the_newest_command() -> None:
    clock = FakeClock()
    loop, rec = make(clock, mode="realtime", duration=0.1, command_timeout=0.5)
    assert isinstance(loop, RealtimeLoop)
    loop.tick(clock.now)  # starts: the initial state goes out
    for _ in range(3):  # warm-up: no answer yet, the initial state is re-sent, no step
        clock.now += DT
        loop.tick(clock.now)
    assert loop.sim.k == 0
    assert loop.sim.stats.resends == 3
    loop.command(0, np.array([1.0]), clock.now + 0.004)
    clock.now += DT
    loop.tick(clock.now)  # the loop closed: its clock starts now
    assert loop.wall_start == clock.now
    assert [t for t, _ in rec.states[-1:]] == [0]
    for k in range(5):
        loop.command(k * DT_NS, np.array([1.0]), clock.now + 0.003)  # answered in 3 ms
        clock.now += DT
        loop.tick(clock.now)
    assert rec.summary is not None
    assert rec.summary["steps"] == 5
    timing = rec.summary["timing"]
    assert (timing["steps"], timing["checked_steps"], timing["deadline_misses"]) == (6, 5, 0)
    assert timing["latency_ms"]["count"] == 5
    assert timing["latency_ms"]["max"] == pytest.approx(3.0)
    assert timing["jitter_ms"]["max"] == pytest.approx(0.0, abs=1e-9)
    assert rec.summary["wall_time_s"] == pytest.approx(0.1)
    assert float(rec.diags[-1][2]["latency_max_ms"]) == pytest.approx(3.0)


def test_realtime_counts_missed_deadlines_then_the_watchdog_applies_the_safe_command() -> None:
    clock = FakeClock()
    loop, rec = make(clock, mode="realtime", command_timeout=0.05)
    loop.tick(clock.now)
    loop.command(0, np.array([1.0]), clock.now)
    clock.now += DT
    loop.tick(clock.now)  # closes the loop (and restarts the timing)
    fresh = clock.now
    loop.command(0, np.array([1.0]), clock.now)
    applied = []
    for _ in range(4):  # then silence
        clock.now += DT
        loop.tick(clock.now)
        applied.append(float(loop.sim.u_last[0]))
    # 20 and 40 ms after the last command it is still in force; at 60 ms (> 50 ms) the watchdog
    # applies the safe command (the cart-pole's equilibrium input: no force)
    assert applied == [1.0, 1.0, 0.0, 0.0]
    assert clock.now - fresh == pytest.approx(0.08)
    assert loop.sim.stats.missed_deadlines == 3  # the steps after the first had no answer in time
    assert loop.watchdog.safe_steps == 2
    assert levels(rec, LogLevel.WARNING) == 1  # the misses are reported at most once a second
    assert [d[0] for d in rec.diags] == [Level.WARN, Level.ERROR]  # missing deadlines, then the watchdog
    loop.command(loop.sim.t_ns, np.array([0.5]), clock.now)
    clock.now += DT
    loop.tick(clock.now)
    assert float(loop.sim.u_last[0]) == 0.5
    assert loop.watchdog.releases == 1


def test_realtime_ignores_commands_from_the_future_or_older_than_the_one_in_force() -> None:
    clock = FakeClock()
    loop, _ = make(clock, mode="realtime")
    loop.tick(clock.now)
    loop.command(DT_NS, np.array([1.0]), clock.now)  # from the future
    assert loop.sim.stats.rejected_commands == 1
    loop.command(0, np.array([1.0]), clock.now)
    clock.now += DT
    loop.tick(clock.now)
    loop.command(0, np.array([2.0]), clock.now)
    clock.now += DT
    loop.tick(clock.now)
    loop.command(DT_NS, np.array([3.0]), clock.now)
    loop.command(0, np.array([4.0]), clock.now)  # older than the one in force
    assert loop.sim.stats.rejected_commands == 2
    clock.now += DT
    loop.tick(clock.now)
    assert float(loop.sim.u_last[0]) == 3.0


def test_realtime_reset_starts_the_timing_anew() -> None:
    clock = FakeClock()
    loop, _ = make(clock, mode="realtime")
    loop.tick(clock.now)
    loop.command(0, np.array([1.0]), clock.now)
    for _ in range(3):
        clock.now += DT
        loop.tick(clock.now)
    assert isinstance(loop, RealtimeLoop)
    assert loop.timing.steps == 3
    loop.reset()
    assert loop.timing.steps == 0
    assert loop.summary()["timing"]["steps"] == 0  # type: ignore[index]


def test_bad_loop_parameters_are_named() -> None:
    clock = FakeClock()
    with pytest.raises(ConfigError, match="'mode'"):
        make(clock, mode="fast")
    with pytest.raises(ConfigError, match="'resend_period'"):
        make(clock, resend_period=0.0)
    with pytest.raises(ConfigError, match="'safe_command'"):
        make(clock, safe_command=[20.0])
    with pytest.raises(ConfigError, match="initial_state: expected a vector of size 4"):
        make(clock, initial_state=[0.0])
