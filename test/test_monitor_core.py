"""The constraint monitor's core: statistics, levels, duplicates, non-finite states, reaction."""

from __future__ import annotations

import numpy as np

from safe_ctrl_ros.safety import make_constraints
from safe_ctrl_ros.safety.monitor import ConstraintMonitor, Level

POLE = [{"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2, "tolerance": 0.05}]
MS = 1_000_000


def monitor(**kw: object) -> ConstraintMonitor:
    return ConstraintMonitor(make_constraints(POLE, 4, 1), 4, [0.0], **kw)  # type: ignore[arg-type]


def test_levels_statistics_and_first_violation() -> None:
    m = monitor()
    assert m.state(0, [0, 0, 0.0, 0]).level is Level.OK  # type: ignore[union-attr]
    assert m.state(20 * MS, [0, 0, 0.17, 0]).level is Level.WARN  # type: ignore[union-attr]
    step = m.state(40 * MS, [0, 0, 0.25, 0])
    assert step is not None
    assert step.level is Level.ERROR
    assert "pole[0]_upper" in step.message
    m.state(60 * MS, [0, 0, 0.1, 0])
    st = m.stats
    assert (st.steps, st.violation_steps, st.failed) == (4, 1, True)
    assert st.first_violation_time == 0.04
    assert np.isclose(st.worst_margin, -0.05)
    assert st.row_violations == [0, 0, 1, 0]


def test_duplicates_and_out_of_order_stamps_are_ignored() -> None:
    m = monitor()
    assert m.state(20 * MS, [0, 0, 0, 0]) is not None
    assert m.state(20 * MS, [0, 0, 1, 0]) is None
    assert m.state(10 * MS, [0, 0, 1, 0]) is None
    assert m.stats.steps == 1


def test_nan_state_is_a_violation_and_a_request() -> None:
    m = monitor()
    step = m.state(0, [0, np.nan, 0, 0])
    assert step is not None
    assert step.level is Level.ERROR
    assert "non-finite" in step.message
    assert m.stats.violation_steps == 1
    assert m.request.active
    step = m.state(20 * MS, [0, 0])  # wrong size: also a violation, no exception
    assert step is not None
    assert step.level is Level.ERROR


def test_reaction_clears_after_enough_good_steps_and_on_stale() -> None:
    m = monitor(clear_after=3)
    m.state(0, [0, 0, 0.3, 0])
    assert m.request.active
    for k in range(1, 3):
        m.state(k * 20 * MS, [0, 0, 0, 0])
        assert m.request.active
    m.state(3 * 20 * MS, [0, 0, 0, 0])
    assert not m.request.active
    m.stale(1.5)
    assert m.request.active
    assert "stale" in m.request.reason


def test_the_command_that_led_to_the_state_is_used() -> None:
    cons = make_constraints([{"kind": "bounded", "name": "u", "variable": "input", "lower": -1.0, "upper": 1.0}], 4, 1)
    m = ConstraintMonitor(cons, 4, [0.0])
    m.command([2.0])
    step = m.state(0, [0, 0, 0, 0])
    assert step is not None
    assert step.level is Level.ERROR
