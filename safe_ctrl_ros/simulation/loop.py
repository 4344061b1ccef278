"""The plant's loop, free of ROS: when to step, with which command, and what to publish.

A `PlantLoop` owns an `Episode` (draw, step, termination), a `Watchdog` and the task, and is driven
by the plant node through a few inputs: `tick(now)` from a wall-clock timer, `command(...)`,
`wrench(...)`, `start()`, `reset()`, `set_model(...)`. It answers through a `PlantOutput` (the
node's publishers and logger, or a recording fake in the unit tests). Two steppers share it:

- `LockstepLoop` (docs/ARCHITECTURE.md): publish the state stamped t_k, wait for the command
  stamped t_k (and, with `wrench_lockstep`, the wrench stamped t_k), then step. A state left
  unanswered is re-sent every `resend_period`; after `command_timeout` the step runs on the safe
  command and counts a missed deadline; the next answered state releases the watchdog. Only the
  answers (and timeouts) decide when the loop steps, never the wall clock's speed, so a lockstep
  run is bit for bit the core simulation.
- `RealtimeLoop`: step on every tick (a timer of period dt) with the newest command, measuring
  jitter, command latency and deadline misses (`RealtimeTiming`). The clock starts only once the
  initial state has been answered (warm-up), so a controller building its solver costs no steps.

Times are wall-clock seconds from a monotonic clock; `clock()` is read where the figures need
the time of a publication itself (a state going out).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Protocol

import numpy as np

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety.monitor import Level
from safe_ctrl_ros.simulation.episode import Episode
from safe_ctrl_ros.simulation.lockstep import LockstepGate, TickAction
from safe_ctrl_ros.simulation.timing import RealtimeTiming
from safe_ctrl_ros.simulation.watchdog import Watchdog, WatchdogEvent
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel
from safe_ctrl_ros.tasks import Task

MODES = ("lockstep", "realtime")
THROTTLE_S = 1.0  # wall s between two reports of a kind that can come every step
WRENCH_AXES = ("fx", "fy", "fz", "tx", "ty", "tz")


class LogLevel(Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class PlantOutput(Protocol):
    """Where the loop's publications and reports go (the plant node's publishers and logger)."""

    def clock(self, t_ns: int) -> None: ...

    def state(self, t_ns: int, x: FloatArray) -> None: ...

    def reference(self, t_ns: int, x_ref: FloatArray, u_ref: FloatArray) -> None: ...

    def graph(self) -> tuple[int, int]:
        """(subscribers of the state, publishers of the command) now."""
        ...

    def log(self, level: LogLevel, message: str) -> None: ...

    def diagnostics(self, level: Level, message: str, values: dict[str, str]) -> None: ...

    def finished(self, summary: dict[str, object]) -> None:
        """The episode ended (`summary["terminated"]`: why, "" when it ran to its end); the loop is done."""
        ...


class Publish(Enum):
    NEW = "new"  # a new state: clock, state and reference (starts the wait for its answer)
    RESEND = "resend"  # the same state again (clock and state)
    FINAL = "final"  # the episode's last state: clock, state and reference, no answer awaited


@dataclass(frozen=True)
class LoopConfig:
    mode: str = "lockstep"
    resend_period: float = 0.1  # lockstep: wall s before re-sending an unanswered state
    wait_for_subscribers: int = 1  # state subscribers to wait for before starting
    autostart: bool = True  # start when the graph is ready (else on start())
    startup_timeout: float = 30.0  # wall s to wait for the graph, then for the first answer; 0: forever
    wrench_lockstep: bool = False  # lockstep: also wait for the wrench stamped t_k

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"parameter 'mode': expected one of {MODES}, got '{self.mode}'")
        if not (np.isfinite(self.resend_period) and self.resend_period > 0):
            raise ConfigError(f"parameter 'resend_period': must be > 0 wall seconds, got {self.resend_period}")
        if not self.startup_timeout >= 0:
            raise ConfigError(f"parameter 'startup_timeout': must be >= 0 (0: forever), got {self.startup_timeout}")


class PlantLoop:
    """What both steppers share: starting, the episode's steps and end, wrenches, resets, reports."""

    mode: ClassVar[str]

    def __init__(
        self,
        episode: Episode,
        task: Task,
        watchdog: Watchdog,
        config: LoopConfig,
        out: PlantOutput,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.episode, self.sim, self.task, self.watchdog = episode, episode.sim, task, watchdog
        self.config, self.out, self.clock = config, out, clock
        self.created_at = clock()
        self.wall_start = 0.0  # when the episode's clock started
        self.started = False
        self.start_requested = False
        self.loop_closed = False  # the stack has answered once
        self.finished = False
        self.ignored_wrench_axes: set[str] = set()
        self.diag_level = Level.OK
        self._diag_misses = 0  # missed deadlines at the last periodic report
        self._told_waiting = False
        self._last_report: dict[str, float] = {}  # throttled kind -> when it was last logged
        episode.reset()
        self._init_stepper()

    # --- inputs ---------------------------------------------------------------------------------
    def start(self) -> tuple[bool, str]:
        """Start the episode once the graph is ready (with autostart off); (accepted, message)."""
        self.start_requested = True
        return (False, "already running") if self.started else (True, "starting when the graph is ready")

    def tick(self, now: float) -> None:
        """The wall-clock timer fired."""
        if self.finished:
            return
        if self.started:
            self._tick(now)
            return
        if self._ready():
            self.started = True
            self.wall_start = now
            self.watchdog.fresh(now)
            self._on_start(now)
            self._publish(Publish.NEW)
        elif self._wants_start() and 0 < self.config.startup_timeout < now - self.created_at:
            subs, pubs = self.out.graph()
            self._finish(
                f"no controller after {self.config.startup_timeout} s: plant/state has {subs} of "
                f"{self.config.wait_for_subscribers} subscriber(s), plant/cmd {pubs} publisher(s)"
            )

    def command(self, stamp_ns: int, u: FloatArray, now: float) -> None:
        """A command stamped `stamp_ns` arrived: checked (rejected / clipped and counted), then used."""
        stats = self.sim.stats
        clipped_before = stats.clipped_commands
        checked = self.sim.check_command(u)
        if checked is None:
            self._log(
                LogLevel.ERROR,
                f"rejected command {u.tolist()}: expected {self.sim.model.nu} finite values "
                f"({stats.rejected_commands} rejected so far)",
                throttle="rejected",
            )
            return
        if stats.clipped_commands > clipped_before:
            self._log(
                LogLevel.WARNING,
                f"clipped command {u.tolist()} to the input bounds: {checked.tolist()} "
                f"({stats.clipped_commands} clipped so far)",
                throttle="clipped",
            )
        self._command(stamp_ns, checked, now)

    def wrench(self, stamp_ns: int, w: FloatArray, now: float) -> None:
        """An external wrench [fx, fy, fz, tx, ty, tz], held until the next one; axes the model
        lacks are reported once and ignored."""
        if w.shape != (len(WRENCH_AXES),) or not np.all(np.isfinite(w)):
            self.out.log(LogLevel.ERROR, f"rejected non-finite wrench {w.tolist()}")
            return
        supported = self.sim.model.wrench_axes
        ignored = {a for a, v in zip(WRENCH_AXES, w, strict=True) if v != 0.0 and a not in supported}
        if ignored - self.ignored_wrench_axes:
            name = self.sim.model.name
            self.out.log(LogLevel.WARNING, f"{name} models only wrench axes {supported}; ignoring {sorted(ignored)}")
            self.ignored_wrench_axes |= ignored
        self.sim.wrench = np.where([a in supported for a in WRENCH_AXES], w, 0.0)
        self._wrench(stamp_ns, now)

    def set_model(self, model: SymbolicModel, changed: dict[str, object]) -> None:
        """New inertial parameters take effect from the next step on (the state carries over)."""
        self.sim.set_model(model)
        self.out.log(LogLevel.INFO, f"t={self.sim.t:.3f} s: model parameters changed: {changed}")

    def reset(self) -> tuple[bool, str]:
        """A new episode from the next drawn initial state; sim time runs on. (accepted, message)"""
        if self.finished:
            return False, "the episode has finished and the plant is shutting down"
        self.episode.reset(keep_time=True)
        self._on_reset()
        message = f"reset to {self.sim.x.tolist()}"
        self.out.log(LogLevel.INFO, message)
        if self.started:
            self._publish(Publish.NEW)
        return True, message

    def periodic_diagnostics(self) -> None:
        if self.finished:
            return
        misses = self.sim.stats.missed_deadlines
        new = misses - self._diag_misses if misses >= self._diag_misses else misses  # (reset: counts restart)
        self._diag_misses = misses
        if not self.started:
            self._diagnostics(Level.OK, "waiting for the graph" if self._wants_start() else "waiting for ~/start")
        elif new:
            self._diagnostics(Level.WARN, f"{new} missed deadline(s) in the last report period")
        else:
            self._diagnostics(Level.OK, f"running, t={self.sim.t:.2f} s")

    # --- reports --------------------------------------------------------------------------------
    def summary(self) -> dict[str, object]:
        """The episode summary (the plant's `summary_file`; keys read by the bringup and the tests)."""
        wall = max(self.clock() - self.wall_start, 1e-9) if self.started else 0.0
        stats, sim = self.sim.stats, self.sim
        return {
            "system": sim.model.name,
            **sim.describe(),
            "mode": self.mode,
            "steps": stats.steps,
            "sim_time_s": round(sim.t, 9),
            "wall_time_s": wall,
            "realtime_factor": sim.t / wall if wall > 0 else 0.0,
            "final_state": dict(zip(sim.model.state_names, sim.x.tolist(), strict=True)),
            "missed_deadlines": stats.missed_deadlines,
            "resends": stats.resends,
            "clipped_commands": stats.clipped_commands,
            "rejected_commands": stats.rejected_commands,
            "safe_command_steps": self.watchdog.safe_steps,
            "watchdog_engagements": self.watchdog.engagements,
            "watchdog_releases": self.watchdog.releases,
            "terminated": self.episode.terminated,
        }

    def diagnostic_values(self) -> dict[str, str]:
        """The key-value pairs of the plant's `/diagnostics` status ("<ns>/plant: loop timing")."""
        stats = self.sim.stats
        return {
            "mode": self.mode,
            "steps": str(stats.steps),
            "sim_time_s": f"{self.sim.t:.3f}",
            "missed_deadlines": str(stats.missed_deadlines),
            "resends": str(stats.resends),
            "clipped_commands": str(stats.clipped_commands),
            "rejected_commands": str(stats.rejected_commands),
            "safe_command_steps": str(self.watchdog.safe_steps),
        }

    # --- the steppers' part -------------------------------------------------------------------------
    def _init_stepper(self) -> None:
        """The stepper's own state."""

    def _tick(self, now: float) -> None:
        raise NotImplementedError

    def _command(self, stamp_ns: int, u: FloatArray, now: float) -> None:
        raise NotImplementedError

    def _wrench(self, stamp_ns: int, now: float) -> None:
        """A wrench arrived (lockstep: it may complete the inputs of a step)."""

    def _on_start(self, now: float) -> None:
        """The episode's clock starts now (real time: the first timed step)."""

    def _on_reset(self) -> None:
        """A new episode began (real time: new per-episode timing)."""

    def _sent(self, t_ns: int) -> None:
        """A new state is about to go out (real time: its publish time starts its latency)."""

    def _awaiting(self, t_ns: int) -> None:
        """A new state went out (lockstep: wait for its answer)."""

    # --- shared mechanics -------------------------------------------------------------------------
    def _wants_start(self) -> bool:
        return self.config.autostart or self.start_requested

    def _ready(self) -> bool:
        if not self._wants_start():
            return False
        subs, pubs = self.out.graph()
        # In real time too: a loop that starts before its commands can arrive loses its first steps.
        return subs >= self.config.wait_for_subscribers and pubs >= 1

    def _publish(self, kind: Publish) -> None:
        t_ns = self.sim.t_ns
        self.out.clock(t_ns)
        if kind is Publish.NEW:
            self._sent(t_ns)
        self.out.state(t_ns, self.sim.x)
        if kind is not Publish.RESEND:
            x_ref, u_ref = self.task.reference(self.sim.t)
            self.out.reference(t_ns, x_ref[0], u_ref[0])
        if kind is Publish.NEW:
            self._awaiting(t_ns)

    def _resend(self) -> None:
        self.sim.stats.resends += 1
        self._publish(Publish.RESEND)

    def _await_first_answer(self, now: float) -> bool:
        """Before the stack's first answer (a controller may still be building its solver): re-send
        the initial state, up to startup_timeout; False when that ran out and the episode ended."""
        timeout = self.config.startup_timeout
        if 0 < timeout < now - self.wall_start:
            self._finish(f"no command for the initial state within {timeout} s")
            return False
        if not self._told_waiting:
            self._told_waiting = True
            self.out.log(LogLevel.INFO, "waiting for the first command (the controller is starting)")
        self._resend()
        return True

    def _guarded(self, now: float, u: FloatArray | None, timed_out: bool | None) -> FloatArray | None:
        """`u` through the watchdog, reporting when it engages or releases."""
        applied, event = self.watchdog.apply(now, u, timed_out)
        if event is not None:
            self._report_watchdog(event)
        return applied

    def _report_watchdog(self, event: WatchdogEvent) -> None:
        if event.engaged:
            reason = f"no fresh command for {event.silent_s:.3f} s: safe command {self.watchdog.safe_u.tolist()}"
            self.out.log(LogLevel.ERROR, f"t={self.sim.t:.3f} s: {reason}")
            self._diagnostics(Level.ERROR, reason)
        else:
            self.out.log(
                LogLevel.WARNING,
                f"t={self.sim.t:.3f} s: commands are back after {event.safe_steps} step(s) on the safe command",
            )
            self._diagnostics(Level.WARN, "commands are back (watchdog released)")

    def _missed_deadline(self, message: str, throttle: bool) -> None:
        self.sim.stats.missed_deadlines += 1
        self._log(LogLevel.WARNING, message, throttle="missed" if throttle else None)  # real time: every step
        if self.diag_level == Level.OK:
            self._diagnostics(Level.WARN, "missing deadlines")

    def _advance(self, u: FloatArray | None) -> None:
        result = self.episode.step(u)
        if not result.finite:
            self._finish(result.terminated)
        elif result.ended:
            self._publish(Publish.FINAL)
            self._finish(result.terminated)
        else:
            self._publish(Publish.NEW)

    def _log(self, level: LogLevel, message: str, throttle: str | None = None) -> None:
        """Log; a `throttle` kind is logged at most once every THROTTLE_S wall seconds."""
        if throttle is not None:
            now = self.clock()
            last = self._last_report.get(throttle)
            if last is not None and now - last < THROTTLE_S:
                return
            self._last_report[throttle] = now
        self.out.log(level, message)

    def _diagnostics(self, level: Level, message: str) -> None:
        self.out.diagnostics(level, message, self.diagnostic_values())
        self.diag_level = level

    def _finish_lines(self, s: dict[str, object]) -> list[str]:
        final = ", ".join(f"{k}={v:+.5f}" for k, v in self.sim.model_state_items(self.sim.x))
        return [
            f"episode finished: {s['steps']} steps, {s['sim_time_s']:.2f} s sim in {s['wall_time_s']:.2f} s wall "
            f"({s['realtime_factor']:.1f}x real time); final state {final}; "
            f"missed deadlines {s['missed_deadlines']}, resends {s['resends']}"
        ]

    def _finish(self, reason: str) -> None:
        self.episode.terminated = reason
        self.finished = True
        summary = self.summary()
        if reason:
            self.out.log(LogLevel.ERROR, f"episode terminated at t={self.sim.t:.3f} s: {reason}")
        for line in self._finish_lines(summary):
            self.out.log(LogLevel.INFO, line)
        self._diagnostics(Level.ERROR if reason else Level.OK, reason or "episode finished")
        self.out.finished(summary)


class LockstepLoop(PlantLoop):
    """Steps when the command stamped with the current state's time (and the wrench) arrived."""

    mode = "lockstep"

    def _init_stepper(self) -> None:
        self.gate = LockstepGate(self.watchdog.timeout, self.config.resend_period)
        self._pending_u: FloatArray | None = None
        self._wrench_stamp: int | None = None

    def _tick(self, now: float) -> None:
        action = self.gate.tick(now)
        if action is TickAction.RESEND:
            self._resend()
        elif action is TickAction.TIMEOUT and not self.loop_closed:
            # Not stepped on the safe command: the stack has not answered once yet.
            if self._await_first_answer(now):
                self.gate.sent(self.sim.t_ns, now)  # wait another command_timeout for the same stamp
        elif action is TickAction.TIMEOUT:
            self._pending_u = None
            self._missed_deadline(
                f"no command for t={self.sim.t:.3f} s within {self.gate.command_timeout} s: applying the safe command",
                throttle=False,
            )
            self._advance(self._guarded(now, None, timed_out=True))

    def _command(self, stamp_ns: int, u: FloatArray, now: float) -> None:
        if self.started and not self.finished and self.gate.accepts(stamp_ns):
            self._pending_u = u
            self.watchdog.fresh(now)
            self.loop_closed = True
            self._try_advance(now)

    def _wrench(self, stamp_ns: int, now: float) -> None:
        self._wrench_stamp = stamp_ns
        self._try_advance(now)

    def _try_advance(self, now: float) -> None:
        """Advance once the command (and, with wrench_lockstep, the wrench) for t_k are in."""
        if self._pending_u is None:
            return
        if self.config.wrench_lockstep and self._wrench_stamp != self.sim.t_ns:
            return
        u, self._pending_u = self._pending_u, None
        self.gate.answered()
        self._advance(self._guarded(now, u, timed_out=False))  # a fresh answer

    def _awaiting(self, t_ns: int) -> None:
        self.gate.sent(t_ns, self.clock())


class RealtimeLoop(PlantLoop):
    """Steps on every tick with the newest command; measures the loop's timing."""

    mode = "realtime"

    def _init_stepper(self) -> None:
        self.timing = RealtimeTiming(self.sim.dt)
        self._latest_u: FloatArray | None = None
        self._latest_stamp: int | None = None

    def _on_start(self, now: float) -> None:
        self.timing.step(now)

    def _on_reset(self) -> None:
        self.timing = RealtimeTiming(self.sim.dt)  # per episode, like the stats

    def _tick(self, now: float) -> None:
        if not self.loop_closed:
            # Warm-up: hold the initial state (re-sent every period) until the stack has answered
            # it once, so a controller still building its solver costs no steps; then start the clock.
            if self._latest_u is None:
                self._await_first_answer(now)
                return
            self.loop_closed = True
            self.wall_start = now
            self.timing = RealtimeTiming(self.sim.dt)
            self.timing.step(now)
            self._publish(Publish.NEW)
            return
        if not self.timing.step(now):
            self._missed_deadline(
                f"no command for t={self.sim.t:.3f} s within one period: applying an older one", throttle=True
            )
        self._advance(self._guarded(now, self._latest_u, timed_out=None))

    def _command(self, stamp_ns: int, u: FloatArray, now: float) -> None:
        if stamp_ns > self.sim.t_ns or (self._latest_stamp is not None and stamp_ns < self._latest_stamp):
            self.sim.stats.rejected_commands += 1  # from the future, or older than the one in force
            self._log(
                LogLevel.WARNING,
                f"ignored a command stamped {stamp_ns * 1e-9:.3f} s (now t={self.sim.t:.3f} s)",
                throttle="ignored",
            )
            return
        self.timing.command(stamp_ns, now)
        self._latest_u, self._latest_stamp = u, stamp_ns
        self.watchdog.fresh(now)

    def _sent(self, t_ns: int) -> None:
        self.timing.sent(t_ns, self.clock())

    def summary(self) -> dict[str, object]:
        return {**super().summary(), "timing": self.timing.summary()}

    def diagnostic_values(self) -> dict[str, str]:
        lat, jit = self.timing.latency, self.timing.jitter
        return super().diagnostic_values() | {
            "checked_steps": str(self.timing.checked_steps),
            "miss_rate": f"{self.timing.miss_rate:.6f}",
            "latency_p50_ms": f"{lat.percentile(50) * 1e3:.3f}",
            "latency_p99_ms": f"{lat.percentile(99) * 1e3:.3f}",
            "latency_max_ms": f"{lat.max * 1e3:.3f}" if lat.count else "nan",
            "jitter_p99_ms": f"{jit.percentile(99) * 1e3:.3f}",
            "jitter_max_ms": f"{jit.max * 1e3:.3f}" if jit.count else "nan",
        }

    def _finish_lines(self, s: dict[str, object]) -> list[str]:
        lat, jit, t = self.timing.latency, self.timing.jitter, self.timing
        return [
            *super()._finish_lines(s),
            f"real-time loop: command latency p50 {lat.percentile(50) * 1e3:.2f} ms, p99 "
            f"{lat.percentile(99) * 1e3:.2f} ms, max {lat.max * 1e3:.2f} ms; period jitter p99 "
            f"{jit.percentile(99) * 1e3:.2f} ms; deadline misses {t.deadline_misses} of "
            f"{t.checked_steps} steps ({t.miss_rate:.2%})",
        ]


def make_loop(
    episode: Episode,
    task: Task,
    watchdog: Watchdog,
    config: LoopConfig,
    out: PlantOutput,
    clock: Callable[[], float] = time.monotonic,
) -> PlantLoop:
    """The stepper of `config.mode`."""
    cls = LockstepLoop if config.mode == "lockstep" else RealtimeLoop
    return cls(episode, task, watchdog, config, out, clock)
