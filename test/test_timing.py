"""Real-time loop timing (ROS-free): histogram percentiles, jitter, latency, deadline misses.

Times are made up (a scripted clock), never measured: nothing here depends on the machine's speed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from safe_ctrl_ros.simulation import LogHistogram, RealtimeTiming

DT = 0.02
MS = 1e-3


def _nearest_rank(values: np.ndarray, q: float) -> float:
    ordered = np.sort(values)
    return float(ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1])


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 99.9, 100])
def test_histogram_percentiles_are_within_the_resolution_above_the_exact_value(q: float) -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(mean=math.log(2e-3), sigma=1.0, size=5000)
    h = LogHistogram(resolution=0.01)
    for v in values:
        h.add(float(v))
    exact = _nearest_rank(values, q)
    assert exact <= h.percentile(q) <= exact * 1.01 + 1e-15
    assert h.count == 5000
    assert h.max == values.max()
    assert h.min == values.min()
    assert h.total == pytest.approx(values.sum())


def test_histogram_edges_empty_and_bad_values() -> None:
    h = LogHistogram(low=1e-6, high=1.0)
    assert math.isnan(h.percentile(50))
    assert h.summary_ms() == {"count": 0, "mean": None, "p50": None, "p99": None, "max": None}
    h.add(0.0)  # below `low`: bin 0
    h.add(5.0)  # above `high`: the last bin, reported as the exact maximum
    assert h.percentile(0) == 1e-6  # below `low`: reported as `low`
    assert h.percentile(100) == 5.0
    with pytest.raises(ValueError, match="finite values >= 0"):
        h.add(-1.0)
    with pytest.raises(ValueError, match="finite values >= 0"):
        h.add(float("nan"))
    with pytest.raises(ValueError, match="percentile must be in"):
        h.percentile(101)
    with pytest.raises(ValueError, match="0 < low < high"):
        LogHistogram(low=1.0, high=0.5)


def test_histogram_memory_does_not_grow_with_the_number_of_samples() -> None:
    h = LogHistogram()
    size = h.counts.size
    for i in range(20000):
        h.add((i % 97) * 1e-4)
    assert h.counts.size == size


def _loop(latencies_ms: list[float | None], intervals_ms: list[float] | None = None) -> RealtimeTiming:
    """A scripted real-time loop: step k fires, sends the state stamped k * dt, and the answer comes
    `latencies_ms[k]` later (None: never). The last state is not answered or checked."""
    timing = RealtimeTiming(DT)
    intervals = intervals_ms or [DT / MS] * len(latencies_ms)
    now = 100.0
    answers: list[tuple[float, int]] = []
    for k, lat in enumerate(latencies_ms):
        if k:
            now += intervals[k] * MS
        for at, stamp in sorted(a for a in answers if a[0] <= now):
            timing.command(stamp, at)
        answers = [a for a in answers if a[0] > now]
        timing.step(now)
        stamp = k * round(DT * 1e9)
        timing.sent(stamp, now)
        if lat is not None:
            answers.append((now + lat * MS, stamp))
    return timing


def test_timely_answers_give_their_latency_and_no_misses() -> None:
    timing = _loop([1.0, 2.0, 3.0, 4.0, 5.0, None])
    s = timing.summary()
    assert s["steps"] == 6
    assert s["checked_steps"] == 5
    assert s["deadline_misses"] == 0
    assert s["miss_rate"] == 0.0
    lat = s["latency_ms"]
    assert isinstance(lat, dict)
    assert lat["count"] == 5
    assert lat["max"] == pytest.approx(5.0)
    assert 3.0 <= lat["p50"] <= 3.0 * 1.01
    assert lat["mean"] == pytest.approx(3.0)


def test_an_answer_after_the_next_step_is_a_deadline_miss_and_a_late_answer() -> None:
    # step 2's answer takes 30 ms: step 3 fires first (a miss), the answer still counts as latency
    timing = _loop([1.0, 1.0, 30.0, 1.0, 1.0, None])
    s = timing.summary()
    assert s["deadline_misses"] == 1
    assert s["late_answers"] == 1
    assert s["checked_steps"] == 5
    assert s["miss_rate"] == pytest.approx(1 / 5)
    lat = s["latency_ms"]
    assert isinstance(lat, dict)
    assert lat["max"] == pytest.approx(30.0)
    assert lat["count"] == 5


def test_unanswered_states_are_misses_once_the_loop_has_closed() -> None:
    timing = _loop([None, None, 2.0, None, None, 2.0, None])
    s = timing.summary()
    assert s["startup_steps"] == 2  # steps 1 and 2 found no answer, but the loop was not closed yet
    assert s["checked_steps"] == 4
    assert s["deadline_misses"] == 2  # the states of steps 3 and 4
    assert s["miss_rate"] == pytest.approx(0.5)


def test_jitter_is_the_deviation_of_each_interval_from_the_period() -> None:
    timing = _loop([1.0] * 5, intervals_ms=[0.0, 20.0, 25.0, 15.0, 20.5])
    jit = timing.summary()["jitter_ms"]
    assert isinstance(jit, dict)
    assert jit["count"] == 4
    assert jit["max"] == pytest.approx(5.0)
    assert jit["mean"] == pytest.approx((0.0 + 5.0 + 5.0 + 0.5) / 4)


def test_duplicate_and_unknown_answers_are_counted_apart() -> None:
    timing = RealtimeTiming(DT)
    timing.step(0.0)
    timing.sent(0, 0.0)
    assert timing.command(0, 0.001) == pytest.approx(0.001)
    assert timing.command(0, 0.002) is None  # a re-sent answer
    assert timing.command(123, 0.003) is None  # a stamp this plant never sent
    timing.sent(0, 0.004)  # a re-sent state is not a new one
    assert timing.step(0.02) is True
    assert timing.unknown_answers == 2
    assert timing.latency.count == 1


def test_only_recent_states_are_remembered() -> None:
    timing = RealtimeTiming(DT, history=4)
    for k in range(10):
        timing.step(k * DT)
        timing.sent(k, k * DT)
    assert len(timing._sent) == 4
    assert timing.command(0, 1.0) is None  # forgotten
    assert timing.command(9, 1.0) is not None


def test_summary_is_json_serializable() -> None:
    text = json.dumps(_loop([1.0, None, 2.0]).summary())
    assert "latency_ms" in text
    assert "NaN" not in text
