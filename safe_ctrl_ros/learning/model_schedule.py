"""Where the adapter's model updates take effect in a node that uses them beside the controller.

In lockstep the adapter announces its rounds (AdapterStatus: round 0 announces, every round reports
its outcome, its `due` and the next round's `next_due`), and every model update names its round. A
node that predicts with the learned residual (the controller, the safety filter) must swap a round's
model in exactly at the state stamped `due`, whatever order DDS delivers the messages in, or two runs
of the same seed differ. So it holds a state at or past a due until it knows the round's outcome and,
if the round changed the model, until that model has arrived. In realtime an update applies when it
arrives. This module keeps that bookkeeping (ROS-free, the nodes feed it their messages' fields);
docs/ARCHITECTURE.md, "lockstep sequence", describes the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

Update = TypeVar("Update")


class Mode(Enum):
    UNANNOUNCED = ""  # synced, and the adapter has not announced its rounds yet
    LOCKSTEP = "lockstep"
    REALTIME = "realtime"


@dataclass
class Changes(Generic[Update]):
    """What a message changed: updates to apply now, in order, and an event for the log ("" = none);
    `error`: the event ends the lockstep schedule (the run is no longer reproducible)."""

    apply: list[Update] = field(default_factory=list)
    event: str = ""
    error: bool = False


class ModelSchedule(Generic[Update]):
    """The adapter's round schedule as one consumer of its updates sees it.

    `sync` False: no schedule, every update applies on arrival and nothing waits (no adapter, or an
    adapter the node does not follow). `sync` True: nothing is answered before the announcement; a
    lockstep schedule then places each update at its round's due; a realtime one applies on arrival.
    """

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.mode = Mode.UNANNOUNCED if sync else Mode.REALTIME
        self.horizon = -1  # lockstep: states stamped before this may be answered (the next round's due)
        self.plan: list[tuple[int, int]] = []  # lockstep: (due, round) of the updates to swap in
        self.updates: dict[int, Update] = {}  # received, by round, not yet applied
        self.last_round = -1
        self.breaks = 0  # lockstep given up (a timeout or an adapter restart): the run is not reproducible

    def on_update(self, round_number: int, update: Update) -> Changes[Update]:
        if self.mode is Mode.REALTIME:
            return Changes([update])
        self.updates[round_number] = update  # swapped in at its round's due (or when realtime starts)
        return Changes()

    def on_status(self, round_number: int, lockstep: bool, changes_model: bool, due: int, next_due: int
                  ) -> Changes[Update]:
        """A round's status (round 0: the announcement). `changes_model`: the round's outcome put a new
        model in force (accepted or rolled back), so an update of that round is due at `due`."""
        if not self.sync:
            return Changes()
        if round_number == 0 and self.last_round > 0 and self.mode is Mode.LOCKSTEP:
            # a new schedule: the adapter restarted and its rounds no longer line up with this run's
            return self._give_up("the adapter restarted: its updates apply when they arrive from now on; "
                                 "this run is not reproducible")
        if round_number <= self.last_round:
            return Changes()  # already seen (a latched copy)
        self.last_round = round_number
        changes: Changes[Update] = Changes()
        if self.mode is Mode.UNANNOUNCED:
            self.mode = Mode.LOCKSTEP if lockstep else Mode.REALTIME
            changes.event = (f"adapter rounds announced ({self.mode.value}): the first is due at "
                             f"t={next_due * 1e-9:.3f} s")
            if self.mode is Mode.REALTIME:
                changes.apply = self._take_all()
        if self.mode is Mode.LOCKSTEP:
            if round_number > 0 and changes_model:
                self.plan.append((due, round_number))
            self.horizon = next_due
        return changes

    def waiting_for(self, stamp: int) -> str:
        """What answering the state at `stamp` waits for ("" = nothing)."""
        if self.mode is Mode.UNANNOUNCED:
            return "announcement"
        if self.mode is Mode.LOCKSTEP:
            if stamp >= self.horizon:
                return f"the status of the adapter's round due at t={self.horizon * 1e-9:.3f} s"
            for due, number in self.plan:
                if due <= stamp and number not in self.updates:
                    return f"the model of the adapter's round {number} (due at t={due * 1e-9:.3f} s)"
        return ""

    def due(self, stamp: int) -> list[Update]:
        """Lockstep: the updates due at or before `stamp`, in round order (call once nothing waits)."""
        out = []
        while self.plan and self.plan[0][0] <= stamp and self.plan[0][1] in self.updates:
            _, number = self.plan.pop(0)
            out.append(self.updates.pop(number))
        return out

    def give_up(self, why: str) -> Changes[Update]:
        """Stop waiting (a timeout): from now on updates apply on arrival; those received apply now."""
        return self._give_up(why)

    def _give_up(self, why: str) -> Changes[Update]:
        self.breaks += self.mode is not Mode.REALTIME
        self.mode = Mode.REALTIME
        return Changes(self._take_all(), why, error=True)

    def _take_all(self) -> list[Update]:
        out = [self.updates[k] for k in sorted(self.updates)]
        self.updates.clear()
        self.plan.clear()
        return out
