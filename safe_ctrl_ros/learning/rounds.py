"""The adapter's training rounds on the sim-time schedule, and its rollback policy (ROS-free).

One round loop for the adapter node (safe_ctrl_ros.nodes.adapter) and the offline re-trainer
(safe_ctrl_ros.learning.offline, `safe-ctrl-retrain`), so both train on the same data in the same
order and apply the same policy (docs/ARCHITECTURE.md, lockstep sequence):

- Round boundaries are the multiples of `update_period` (in stamp ns); the first round ends at the
  first boundary after the first state seen. Round r trains on the transitions (x_k, u_k, x_k+1)
  whose next state is stamped after round r-1's end and at most at round r's end (`data_end`),
  added in stamp order, whatever order they arrived in; a step whose state or command (or, with
  `disturbances`, the controller's status) never came is counted (`missing`). Its result (a new
  version, a rollback, or no change) is in force from `due` = data_end + `round_delay` on.
- Policy, checked at the start of each round on the monitor's verdicts up to its data end (by
  stamp): when the `window` states from the newest version's due on hold more violations than the
  `window` states before it, the round rolls back to the newest verified version before it
  (OnlineAdapter.rollback; and does not train). A
  requested rollback (`~/rollback`) is carried out the same way by the next round. A round frozen
  by a safety request (the monitor's verdict at its data end) or by hand does not train, nor does
  any round once the divergence backoff reached its floor (OnlineAdapter.frozen_reason; rollbacks
  are still carried out).
- The trainer's random draws depend only on the rounds before, so the same data give the same
  versions, however long a round took in wall time.
- With `disturbances` (the `targets.remove_disturbance` setting) the controller's status is part
  of a step's data like its command: the NMPC's disturbance estimate d_k for the state at stamp k
  (ControllerStatus.disturbance_estimate, whose header stamp is the state's), removed from the
  target of the transition from x_k (OnlineAdapter.add). A round is complete only with the status of
  its last step (as with its command), and a step whose status never came is `missing` like one
  whose command never came: never trained on with its estimate taken as zero, which would depend on
  when the status arrived. An empty estimate (the controller has none in use) removes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import OnlineAdapter
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.systems.base import FloatArray

# What a round did (AdapterStatus.outcome).
ACCEPTED, REJECTED, ROLLED_BACK, FROZEN, NOT_READY = "accepted", "rejected", "rolled back", "frozen", "not ready"
ANNOUNCED = "announced"  # the schedule, before the first round


@dataclass(frozen=True)
class Schedule:
    """When rounds end and when their results take effect, in stamp nanoseconds."""

    dt_ns: int
    period_ns: int
    delay_ns: int

    @classmethod
    def of(cls, dt: float, update_period: float, round_delay: float) -> Schedule:
        dt_ns, period_ns, delay_ns = round(dt * 1e9), round(update_period * 1e9), round(round_delay * 1e9)
        if dt_ns <= 0 or period_ns <= 0 or delay_ns < 0:
            raise ConfigError("the adapter's rounds need dt > 0, update_period > 0 and round_delay >= 0")
        return cls(dt_ns, period_ns, delay_ns)

    def first_end(self, first_stamp: int) -> int:
        """The data end of the first round: the first boundary after `first_stamp`."""
        return (first_stamp // self.period_ns + 1) * self.period_ns


@dataclass(frozen=True)
class RollbackPolicy:
    enabled: bool = True
    window: int = 50  # states compared before and after a version's due


@dataclass
class RoundResult:
    number: int  # 1, 2, ...
    data_end_ns: int
    due_ns: int
    next_due_ns: int  # the due of the round after this one
    outcome: str  # ACCEPTED | REJECTED | ROLLED_BACK | FROZEN | NOT_READY
    detail: str
    version: int  # the version in force from due_ns on (0: the start model)
    net: QuantizedMLP | None  # the weights to send when this round changes the model, else None
    val_loss: float  # of the trained weights on the validation transitions (nan before any)
    train_loss: float  # of this round's training (nan without training)
    transitions: int  # added to the buffers by this round
    missing: int  # steps of this round whose state, command or (with disturbances) controller status never arrived
    restarted: bool = False  # training diverged and restarted (docs/LEARNING.md)
    step_time_ms: float = 0.0  # wall time per training step (0 without training)
    # The checks (learning/validation.py) the candidate failed: not published, counted as rejected.
    checks_failed: tuple[str, ...] = ()

    @property
    def changes_model(self) -> bool:
        return self.net is not None


@dataclass
class Taken:
    """A round's data, taken out of the inbox: transitions in stamp order, the monitor's verdicts."""

    data_end_ns: int
    transitions: list[tuple[int, FloatArray, FloatArray, FloatArray]] = field(default_factory=list)  # next stamp
    missing: int = 0
    violations: dict[int, bool] = field(default_factory=dict)
    safety: tuple[int, str] | None = None  # the newest monitor verdict's stamp and safety request reason
    # Per transition (by its next stamp): the command one step before u_k, u_k-1, where it arrived
    # (a residual with previous_input takes it; OnlineAdapter.add uses u_k where it is missing).
    previous: dict[int, FloatArray] = field(default_factory=dict)
    # Per transition (by its next stamp): the controller's disturbance estimate d_k for the state x_k
    # (Rounds with disturbances: every transition has one, maybe empty; else none: nothing removed).
    disturbance: dict[int, FloatArray] = field(default_factory=dict)

    def added_to(self, core: OnlineAdapter) -> int:
        """Add the transitions to the adapter's buffers in order (each with its u_k-1 and d_k): how many
        it took."""
        return sum(1 for nxt, x, u, xn in self.transitions
                   if core.add(x, u, xn, self.previous.get(nxt), self.disturbance.get(nxt)))


class Rounds:
    """The inbox (states, commands, monitor verdicts, with `disturbances` the controller's estimates,
    by stamp) and the round loop around one core."""

    def __init__(self, core: OnlineAdapter, schedule: Schedule, steps_per_round: int,
                 policy: RollbackPolicy | None = None, disturbances: bool = False) -> None:
        if steps_per_round < 1:
            raise ConfigError("steps_per_update >= 1 is required")
        self.core, self.schedule, self.steps = core, schedule, steps_per_round
        self.policy = policy or RollbackPolicy()
        # Whether each step needs the controller's disturbance estimate (module docstring).
        self.with_disturbances = disturbances
        self.states: dict[int, FloatArray] = {}
        self.commands: dict[int, FloatArray] = {}
        self.disturbances: dict[int, FloatArray] = {}
        self.verdicts: dict[int, tuple[bool, str]] = {}
        self.newest_state = self.newest_command = self.newest_verdict = self.newest_disturbance = -1
        self.number = 0  # rounds done
        self.data_end: int | None = None  # of the next round (None: before the first state)
        self.start: int | None = None  # the first state's stamp
        self.version = 0
        self.watch: int | None = None  # due of the newest version while its violations are watched
        self.violations: dict[int, bool] = {}
        self.safety: tuple[int, str] = (-1, "")
        self.accepted = self.rejected = self.rollbacks = self.missing = 0

    # --- data (any order, re-sends included) ------------------------------------------------------
    def state(self, stamp: int, x: FloatArray) -> None:
        if self.number == 0 and (self.start is None or stamp < self.start):
            # Before the first round the oldest state starts the schedule (in lockstep it is the first
            # state: the plant re-sends it until the controller, waiting for the announcement, answers).
            self.start, self.data_end = stamp, self.schedule.first_end(stamp)
        if stamp >= self._lo():
            self.states.setdefault(stamp, x)
        self.newest_state = max(self.newest_state, stamp)

    def command(self, stamp: int, u: FloatArray) -> None:
        if self.number == 0 or stamp >= self._lo():
            self.commands.setdefault(stamp, u)
        self.newest_command = max(self.newest_command, stamp)

    def disturbance(self, stamp: int, d: FloatArray) -> None:
        """The controller's disturbance estimate for the state at `stamp` (ControllerStatus of that
        stamp; empty: none in use). Kept only with `disturbances`."""
        if not self.with_disturbances:
            return
        if self.number == 0 or stamp >= self._lo():
            self.disturbances.setdefault(stamp, d)
        self.newest_disturbance = max(self.newest_disturbance, stamp)

    def verdict(self, stamp: int, violated: bool, safety_reason: str) -> None:
        """The monitor's verdict on the state at `stamp`: any constraint violated, and the reason of the
        safety request in force after it ("" = none)."""
        if self.number == 0 or stamp >= self._lo():
            self.verdicts.setdefault(stamp, (violated, safety_reason))
        self.newest_verdict = max(self.newest_verdict, stamp)

    # --- schedule ---------------------------------------------------------------------------------
    def next_round(self) -> tuple[int, int] | None:
        """(data end, due) of the next round; None before the first state."""
        if self.data_end is None:
            return None
        return self.data_end, self.data_end + self.schedule.delay_ns

    def complete(self, with_verdicts: bool) -> bool:
        """Whether every part of the next round's data is in: the state at its end, the command (and,
        with `disturbances`, the controller's status) of the step before, and (with_verdicts) the
        monitor's verdict at its end. Streams from one publisher arrive in order, so a newer sample
        means the older ones came or are lost."""
        if self.data_end is None:
            return False
        end, last = self.data_end, self.data_end - self.schedule.dt_ns
        data = self.newest_state >= end and self.newest_command >= last
        data = data and (not self.with_disturbances or self.newest_disturbance >= last)
        return data and (not with_verdicts or self.newest_verdict >= end)

    def started(self) -> bool:
        """Whether the state stream has reached the next round's data end (realtime rounds start then)."""
        return self.data_end is not None and self.newest_state >= self.data_end

    def _lo(self) -> int:
        """The stamp the next round's first transition starts from: the first state, or the last round's end."""
        assert self.start is not None
        assert self.data_end is not None
        return self.start if self.number == 0 else self.data_end - self.schedule.period_ns

    def take(self, upto: int | None = None) -> Taken:
        """Take the next round's data out of the inbox (the node holds its lock around this only);
        `upto` (before the next round's end) takes only the transitions into states up to it."""
        if self.start is None or self.data_end is None:
            raise RuntimeError("no round before the first state")
        end, dt, lo = self.data_end if upto is None else min(upto, self.data_end), self.schedule.dt_ns, self._lo()
        taken = Taken(end)
        # Every step whose next state lies in (lo, end], on the grid of the first state's stamp.
        first = self.start + ((lo - self.start) // dt + 1) * dt
        for nxt in range(first, end + 1, dt):
            x, u, xn = self.states.get(nxt - dt), self.commands.get(nxt - dt), self.states.get(nxt)
            d = self.disturbances.get(nxt - dt)
            if x is None or u is None or xn is None or (self.with_disturbances and d is None):
                taken.missing += 1
            else:
                taken.transitions.append((nxt, x, u, xn))
                if d is not None:
                    taken.disturbance[nxt] = d
                u_prev = self.commands.get(nxt - 2 * dt)
                if u_prev is not None:
                    taken.previous[nxt] = u_prev
        for stamp in sorted(s for s in self.verdicts if s <= end):
            violated, reason = self.verdicts.pop(stamp)
            taken.violations[stamp] = violated
            taken.safety = (stamp, reason)
        # The state at the end starts the next round's first transition.
        self.states = {s: x for s, x in self.states.items() if s >= end - dt}
        self.commands = {s: u for s, u in self.commands.items() if s >= end - dt}
        self.disturbances = {s: d for s, d in self.disturbances.items() if s >= end - dt}
        return taken

    def add_tail(self, upto: int) -> tuple[int, int]:
        """Add the transitions after the last round, up to `upto`, to the buffers without a round
        (the offline re-trainer's end of the recording): (added, missing)."""
        taken = self.take(upto)
        return taken.added_to(self.core), taken.missing

    # --- a round ----------------------------------------------------------------------------------
    def run(self, taken: Taken, frozen: str = "", rollback: bool = False) -> RoundResult:
        """One round on `taken` (from take()): policy, then training and the proposal."""
        if self.data_end is None or taken.data_end_ns != self.data_end:
            raise RuntimeError("run() takes the data of the next round, from take()")
        core, end = self.core, self.data_end
        due = end + self.schedule.delay_ns
        added = taken.added_to(core)
        self.missing += taken.missing
        self.violations.update(taken.violations)
        if taken.safety is not None:
            self.safety = taken.safety
        reason = self._rollback_reason(end, requested=rollback)
        net: QuantizedMLP | None = None
        train_loss, restarted, step_ms = float("nan"), False, 0.0
        checks_failed: tuple[str, ...] = ()
        if reason:
            previous = core.rollback()
            self.rollbacks += 1
            number = previous.number if previous is not None else 0
            detail = f"{reason}: back from v{self.version} to v{number} (verified: {core.verified_versions})"
            self.version = number
            net = previous.net if previous is not None else core.start_net
            outcome = ROLLED_BACK
        elif frozen or self.safety[1]:
            outcome, detail = FROZEN, frozen or f"safety request: {self.safety[1]}"
        elif core.frozen:  # the divergence backoff reached its floor (OnlineAdapter.frozen_reason)
            outcome, detail = FROZEN, core.frozen_reason
        elif not core.ready:
            outcome = NOT_READY
            detail = (f"{core.train_buf.count} training, {core.val_buf.count} validation transitions "
                      f"(needs {core.cfg.batch_size} and {core.cfg.min_val})")
        else:
            begin = time.perf_counter()
            train_loss = core.train(self.steps)
            step_ms = (time.perf_counter() - begin) * 1e3 / self.steps
            restarts = core.restarts
            version = core.propose()
            restarted = core.restarts > restarts
            if core.frozen:  # this round's divergence reached the backoff's floor
                outcome, detail = FROZEN, core.frozen_reason
            elif version is None:
                self.rejected += 1
                outcome, detail = REJECTED, f"validation loss {core.val_loss():.4g}, best {core.best_val:.4g}"
                if core.rejected_by not in ("", "validation") and core.last_check is not None:
                    checks_failed = core.last_check.failed
                    detail = (f"failed the {core.rejected_by} check ({core.last_check.describe()}); {detail}; "
                              f"{self.checks_summary()}")
            else:
                self.accepted += 1
                self.version, net = version.number, version.net
                self.watch = due if self.policy.enabled else None
                outcome, detail = ACCEPTED, f"v{version.number}: validation loss {version.val_loss:.4g}"
                if version.checks is not None:
                    detail += f", checks passed ({version.checks.describe()})"
        val = core.val_loss() if core.val_buf.count else float("nan")
        self.number += 1
        self.data_end = end + self.schedule.period_ns
        self._prune()
        return RoundResult(
            number=self.number, data_end_ns=end, due_ns=due, next_due_ns=self.data_end + self.schedule.delay_ns,
            outcome=outcome, detail=detail, version=self.version, net=net, val_loss=val, train_loss=train_loss,
            transitions=added, missing=taken.missing, restarted=restarted, step_time_ms=step_ms,
            checks_failed=checks_failed,
        )

    def checks_summary(self) -> str:
        """The candidates that failed each check so far (AdapterStatus.detail of a rejection by them)."""
        counts = ", ".join(f"{name} {n}" for name, n in self.core.failed_checks.items())
        return f"failed checks so far: {counts}"

    def _rollback_reason(self, end: int, requested: bool) -> str:
        if requested:
            self.watch = None
            return "rollback requested"
        if self.watch is None or not self.policy.enabled:
            return ""
        dt, w, due = self.schedule.dt_ns, self.policy.window, self.watch
        if due + (w - 1) * dt > end:
            return ""  # the window after the version's due is not over yet
        after = sum(self.violations.get(due + i * dt, False) for i in range(w))
        before = sum(self.violations.get(due - (i + 1) * dt, False) for i in range(w))
        self.watch = None
        if after > before:
            return f"violations rose after v{self.version} ({after} vs {before} in {w} states)"
        return ""

    def _prune(self) -> None:
        """Keep the verdicts the policy may still compare: `window` states before the watched due."""
        assert self.data_end is not None
        horizon = (self.watch if self.watch is not None else self.data_end) - self.policy.window * self.schedule.dt_ns
        self.violations = {s: v for s, v in self.violations.items() if s >= horizon}

    def announce(self) -> RoundResult:
        """The schedule before any round (round 0): the first round's due, nothing in force but v0."""
        nxt = self.next_round()
        if nxt is None:
            raise RuntimeError("the schedule is known from the first state on")
        return RoundResult(number=0, data_end_ns=-1, due_ns=-1, next_due_ns=nxt[1], outcome=ANNOUNCED,
                           detail="", version=0, net=None, val_loss=float("nan"), train_loss=float("nan"),
                           transitions=0, missing=0)
