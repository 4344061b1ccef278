"""The adapter's round schedule as a consumer of its model updates sees it
(safe_ctrl_ros.learning.model_schedule): where each update takes effect, whatever the order of arrival."""

from __future__ import annotations

import pytest

from safe_ctrl_ros.learning.model_schedule import Mode, ModelSchedule

MS = 1_000_000


def lockstep(first_due: int = 500 * MS) -> ModelSchedule[str]:
    s: ModelSchedule[str] = ModelSchedule(sync=True)
    changes = s.on_status(0, lockstep=True, changes_model=False, due=0, next_due=first_due)
    assert changes.apply == []
    assert "lockstep" in changes.event
    assert not changes.error
    return s


def test_without_sync_updates_apply_on_arrival_and_nothing_waits() -> None:
    s: ModelSchedule[str] = ModelSchedule(sync=False)
    assert s.waiting_for(10**12) == ""
    assert s.on_update(3, "m3").apply == ["m3"]
    assert s.on_status(1, True, True, 0, 10).apply == []  # a schedule it does not follow
    assert s.waiting_for(10**12) == ""


def test_synced_nothing_is_answered_before_the_announcement_and_updates_are_held() -> None:
    s: ModelSchedule[str] = ModelSchedule(sync=True)
    assert s.waiting_for(0) == "announcement"
    assert s.on_update(1, "m1").apply == []
    assert s.updates == {1: "m1"}


@pytest.mark.parametrize("model_first", [True, False])
def test_lockstep_swaps_a_model_in_exactly_at_its_due_in_either_order_of_arrival(model_first: bool) -> None:
    s = lockstep()
    assert s.waiting_for(480 * MS) == ""
    assert s.waiting_for(500 * MS).startswith("the status of the adapter's round due at t=0.500")
    if model_first:
        assert s.on_update(1, "m1").apply == []  # early: held for its due
    s.on_status(1, lockstep=True, changes_model=True, due=500 * MS, next_due=1000 * MS)
    if not model_first:
        assert s.waiting_for(500 * MS) == "the model of the adapter's round 1 (due at t=0.500 s)"
        assert s.due(500 * MS) == []  # not there yet: nothing swapped
        assert s.on_update(1, "m1").apply == []
    assert s.waiting_for(480 * MS) == ""
    assert s.due(480 * MS) == []  # one step before its due: not yet
    assert s.waiting_for(500 * MS) == ""
    assert s.due(500 * MS) == ["m1"]
    assert s.due(520 * MS) == []
    assert s.waiting_for(1000 * MS) != ""  # the next round's status


def test_a_round_that_keeps_the_model_is_not_waited_for_and_latched_copies_count_once() -> None:
    s = lockstep()
    s.on_status(1, True, changes_model=False, due=500 * MS, next_due=1000 * MS)  # rejected
    assert s.waiting_for(500 * MS) == ""
    assert s.plan == []
    s.on_status(2, True, changes_model=True, due=1000 * MS, next_due=1500 * MS)
    s.on_status(2, True, changes_model=True, due=1000 * MS, next_due=1500 * MS)  # a latched re-delivery
    assert s.plan == [(1000 * MS, 2)]
    s.on_update(2, "m2")
    assert s.due(1460 * MS) == ["m2"]


def test_several_due_updates_apply_in_round_order() -> None:
    s = lockstep()
    s.on_status(1, True, True, 500 * MS, 1000 * MS)
    s.on_status(2, True, True, 1000 * MS, 1500 * MS)
    s.on_update(2, "m2")
    s.on_update(1, "m1")
    assert s.due(1200 * MS) == ["m1", "m2"]


def test_an_adapter_restart_or_a_timeout_ends_lockstep_and_applies_what_came() -> None:
    s = lockstep()
    for r in (1, 2):
        s.on_status(r, True, True, r * 500 * MS, (r + 1) * 500 * MS)
    s.on_update(2, "m2")
    s.on_update(1, "m1")
    changes = s.on_status(0, True, False, 0, 500 * MS)  # round 0 again: a new schedule
    assert changes.apply == ["m1", "m2"]
    assert "restarted" in changes.event
    assert changes.error  # logged as an error: the run is no longer reproducible
    assert s.mode is Mode.REALTIME
    assert s.breaks == 1  # reported in the nodes' statuses (sync_breaks_total)
    assert s.waiting_for(10**12) == ""
    assert s.on_update(3, "m3").apply == ["m3"]

    t = lockstep()
    t.on_status(1, True, True, 500 * MS, 1000 * MS)
    t.on_update(1, "m1")
    gave_up = t.give_up("timeout")
    assert gave_up.apply == ["m1"]
    assert gave_up.error
    assert t.mode is Mode.REALTIME
    assert t.breaks == 1
    t.give_up("again")  # nothing left to give up: realtime already
    assert t.breaks == 1
    assert lockstep().breaks == 0


def test_a_realtime_adapter_applies_on_arrival_after_its_announcement() -> None:
    s: ModelSchedule[str] = ModelSchedule(sync=True)
    s.on_update(1, "m1")  # before the announcement: held
    changes = s.on_status(0, lockstep=False, changes_model=False, due=0, next_due=500 * MS)
    assert changes.apply == ["m1"]
    assert s.waiting_for(10**12) == ""
    assert s.on_update(2, "m2").apply == ["m2"]
