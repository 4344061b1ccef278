"""The injector's delayed publisher: each message goes out after its own delay, in due-time order."""

from __future__ import annotations

import threading
import time

from safe_ctrl_ros.ros.delayed import DelayedPublisher


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def publish(self, msg: str) -> None:
        with self.lock:
            self.got.append((msg, time.monotonic()))


def test_messages_leave_after_their_delay_in_due_order() -> None:
    out = Recorder()
    delayed = DelayedPublisher()
    start = time.monotonic()
    delayed.publish(out, "late", 0.08)
    delayed.publish(out, "early", 0.02)
    delayed.publish(out, "middle", 0.05)
    deadline = time.monotonic() + 5.0
    while len(out.got) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    delayed.stop()
    assert [m for m, _ in out.got] == ["early", "middle", "late"]
    for (_, at), wanted in zip(out.got, (0.02, 0.05, 0.08), strict=True):
        assert at - start >= wanted  # never before its time (how much later depends on the machine)
    assert delayed.sent == 3


def test_stop_drops_what_is_still_waiting() -> None:
    out = Recorder()
    delayed = DelayedPublisher()
    delayed.publish(out, "never", 30.0)
    assert delayed.pending == 1
    delayed.stop()
    assert out.got == []
