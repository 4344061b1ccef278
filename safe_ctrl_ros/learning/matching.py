"""Transitions (x_k, u_k, x_k+1) from a state stream and a command stream, matched by stamp.

Over DDS the command u_k and the state x_k+1 it produced come from different publishers by
different paths, so either may arrive first; in lockstep the plant may also re-send a state. A
transition is emitted once, when the last of its three parts arrives, whatever the order. (Matching
only on the arrival of x_k+1 lost about half of the flagship's transitions.)
"""

from __future__ import annotations

from typing import Any

from safe_ctrl_ros.systems.base import FloatArray

Transition = tuple[FloatArray, FloatArray, FloatArray]


class TransitionMatcher:
    def __init__(self, dt_ns: int, keep: int = 64) -> None:
        if dt_ns <= 0 or keep < 2:
            raise ValueError("TransitionMatcher needs dt_ns > 0 and keep >= 2")
        self.dt_ns, self.keep = dt_ns, keep
        self.states: dict[int, FloatArray] = {}
        self.cmds: dict[int, FloatArray] = {}
        self.done: dict[int, bool] = {}  # stamps k whose transition went out

    def state(self, stamp: int, x: FloatArray) -> list[Transition]:
        """x at `stamp`: may complete the transition into it and the one out of it."""
        self._keep(self.states, stamp, x)
        return self._match(stamp - self.dt_ns) + self._match(stamp)

    def command(self, stamp: int, u: FloatArray) -> list[Transition]:
        self._keep(self.cmds, stamp, u)
        return self._match(stamp)

    def _match(self, k: int) -> list[Transition]:
        nxt = k + self.dt_ns
        if k in self.done or k not in self.states or k not in self.cmds or nxt not in self.states:
            return []
        self._keep(self.done, k, True)
        return [(self.states[k], self.cmds[k], self.states[nxt])]

    def _keep(self, store: dict[int, Any], stamp: int, value: Any) -> None:
        store[stamp] = value
        while len(store) > self.keep:
            store.pop(min(store))
