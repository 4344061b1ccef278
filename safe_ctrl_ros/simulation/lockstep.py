"""The plant's side of the lockstep protocol, free of ROS so it can be tested on its own.

The plant publishes the state stamped t_k and waits for a command stamped t_k. State streams are
best effort, so a state can be lost (and a subscriber that has just been discovered may drop the
first samples): after `resend_period` without an answer the same state is sent again, and only after
`command_timeout` does the plant hold the last command, count a missed deadline and advance.
Times here are wall-clock seconds from a monotonic clock.
"""

from __future__ import annotations

from enum import Enum


class TickAction(Enum):
    NONE = "none"
    RESEND = "resend"
    TIMEOUT = "timeout"


class LockstepGate:
    def __init__(self, command_timeout: float, resend_period: float) -> None:
        if not (command_timeout > 0 and resend_period > 0):  # NaN is not positive either
            raise ValueError("command_timeout and resend_period must be positive")
        self.command_timeout = command_timeout
        self.resend_period = resend_period
        self.waiting_for: int | None = None
        self._since = 0.0
        self._last_send = 0.0

    def sent(self, stamp_ns: int, now: float) -> None:
        """A state stamped `stamp_ns` was published for the first time."""
        self.waiting_for = stamp_ns
        self._since = now
        self._last_send = now

    def accepts(self, stamp_ns: int) -> bool:
        """Whether a command with this stamp answers the state being waited for."""
        return self.waiting_for is not None and stamp_ns == self.waiting_for

    def answered(self) -> None:
        self.waiting_for = None

    def tick(self, now: float) -> TickAction:
        if self.waiting_for is None:
            return TickAction.NONE
        if now - self._since >= self.command_timeout:
            self.waiting_for = None
            return TickAction.TIMEOUT
        if now - self._last_send >= self.resend_period:
            self._last_send = now
            return TickAction.RESEND
        return TickAction.NONE
