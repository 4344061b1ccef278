"""Real-time loop timing, free of ROS: period jitter, command latency and deadline misses.

The plant in real-time mode steps on a wall-clock timer. At each step k it publishes the state
stamped t_k; the controller answers with a command stamped t_k (the same stamp). `RealtimeTiming`
is told when each step fires (`step`), when each state goes out (`sent`) and when each command
comes in (`command`), and keeps per episode:

- jitter: |actual wall interval between two steps - dt|;
- command latency: wall time from publishing the state stamped t_k to the first command stamped
  t_k (late answers, after step k+1 has fired, count too: they are the tail of the distribution);
- deadline misses: step k+1 fired before any command stamped t_k arrived, so the plant applied an
  older command. Steps before the loop first closed (the first command of the episode) are counted
  apart, as `startup_steps`: DDS discovery, not the loop, decides them.

Distributions are kept in `LogHistogram`s (constant memory for runs of any length; percentiles to
1% relative resolution), counts exactly. Times are seconds from a monotonic clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np


class LogHistogram:
    """Counts of non-negative values in log-spaced bins: bounded memory, approximate percentiles.

    Bin i (i >= 1) holds values in [low * g^(i-1), low * g^i) with g = 1 + resolution; bin 0 holds
    everything below `low`, the last bin everything at or above `high`. A percentile is the upper
    edge of the bin it falls in, clamped to the exact minimum and maximum seen, so it is never more
    than `resolution` (relative) above the true value and never below it, except below `low`.
    """

    def __init__(self, low: float = 1e-6, high: float = 100.0, resolution: float = 0.01) -> None:
        if not (0 < low < high and resolution > 0):
            raise ValueError("need 0 < low < high and resolution > 0")
        self.low, self.high = low, high
        self._log_g = math.log1p(resolution)
        self._bins = math.ceil(math.log(high / low) / self._log_g) + 2
        self.counts = np.zeros(self._bins, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _index(self, value: float) -> int:
        if value < self.low:
            return 0
        if value >= self.high:
            return self._bins - 1
        return min(1 + int(math.log(value / self.low) / self._log_g), self._bins - 2)

    def _upper_edge(self, index: int) -> float:
        if index == 0:
            return self.low
        if index == self._bins - 1:
            return self.max
        return self.low * math.exp(index * self._log_g)

    def add(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"LogHistogram holds finite values >= 0, got {value}")
        self.counts[self._index(value)] += 1
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100), to the bins' resolution; nan when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(max(self._upper_edge(index), self.min), self.max)

    def summary_ms(self) -> dict[str, float | int | None]:
        """count, mean, p50, p99 and max in milliseconds (None when empty: JSON has no nan)."""
        if self.count == 0:
            return {"count": 0, "mean": None, "p50": None, "p99": None, "max": None}
        return {
            "count": self.count,
            "mean": self.total / self.count * 1e3,
            "p50": self.percentile(50) * 1e3,
            "p99": self.percentile(99) * 1e3,
            "max": self.max * 1e3,
        }


class RealtimeTiming:
    """Jitter, command latency and deadline misses of a loop stepping every `dt` wall seconds."""

    def __init__(self, dt: float, history: int = 256) -> None:
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be positive, got {dt}")
        self.dt = dt
        self.history = history
        self.jitter = LogHistogram()
        self.latency = LogHistogram()
        self.steps = 0  # steps fired (the first one, which only publishes the initial state, included)
        self.checked_steps = 0  # steps whose predecessor's answer was checked (loop closed)
        self.startup_steps = 0  # steps fired before the loop first closed
        self.deadline_misses = 0
        self.late_answers = 0  # answers that came after their deadline (already counted as misses)
        self.unknown_answers = 0  # commands stamped with no state sent recently (or answered twice)
        self.closed = False
        self._last_step: float | None = None
        self._pending: int | None = None  # stamp of the state waiting for its answer
        self._answered_pending = False
        self._sent: OrderedDict[int, float] = OrderedDict()  # stamp -> publish time, recent states
        self._answered: set[int] = set()

    def step(self, now: float) -> bool:
        """The timer fired: record the interval since the last step and whether the state sent at
        the last step was answered in time. False means a deadline miss (counted)."""
        self.steps += 1
        if self._last_step is not None:
            self.jitter.add(abs((now - self._last_step) - self.dt))
        self._last_step = now
        if self._pending is None:
            return True
        if not self.closed:
            self.startup_steps += 1
            return True
        self.checked_steps += 1
        if self._answered_pending:
            return True
        self.deadline_misses += 1
        return False

    def sent(self, stamp_ns: int, now: float) -> None:
        """The state stamped `stamp_ns` went out (once per stamp; re-sends are not new states)."""
        if stamp_ns in self._sent:
            return
        self._sent[stamp_ns] = now
        while len(self._sent) > self.history:
            old, _ = self._sent.popitem(last=False)
            self._answered.discard(old)
        self._pending = stamp_ns
        self._answered_pending = False

    def command(self, stamp_ns: int, now: float) -> float | None:
        """A command stamped `stamp_ns` arrived: its latency in s if it is the first answer to a
        recent state, else None (a duplicate or an answer to a state this plant did not send)."""
        sent_at = self._sent.get(stamp_ns)
        if sent_at is None or stamp_ns in self._answered:
            self.unknown_answers += 1
            return None
        self._answered.add(stamp_ns)
        latency = max(now - sent_at, 0.0)
        self.latency.add(latency)
        self.closed = True
        if stamp_ns == self._pending:
            self._answered_pending = True
        else:
            self.late_answers += 1
        return latency

    @property
    def miss_rate(self) -> float:
        return self.deadline_misses / self.checked_steps if self.checked_steps else 0.0

    def summary(self) -> dict[str, object]:
        """JSON-ready: counts, the miss rate, and jitter and latency in ms (count, mean, p50, p99, max)."""
        return {
            "period_ms": self.dt * 1e3,
            "steps": self.steps,
            "checked_steps": self.checked_steps,
            "startup_steps": self.startup_steps,
            "deadline_misses": self.deadline_misses,
            "miss_rate": self.miss_rate,
            "late_answers": self.late_answers,
            "unknown_answers": self.unknown_answers,
            "latency_ms": self.latency.summary_ms(),
            "jitter_ms": self.jitter.summary_ms(),
        }

