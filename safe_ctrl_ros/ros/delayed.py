"""Publishing after a delay (wall time), for the injector's link faults.

One thread holds the delayed messages in a heap by due time and publishes each when due (rclpy
publishers may be used from any thread). Order between messages follows their due times, so a
jittered link can reorder messages, as a real one can.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any


class DelayedPublisher:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any, Any]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="delayed-publisher", daemon=True)
        self._thread.start()

    def publish(self, publisher: Any, msg: Any, delay_s: float) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._order), publisher, msg))
            self._cv.notify()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(wait)
                if self._stopped:
                    return
                _, _, publisher, msg = heapq.heappop(self._heap)
            try:
                publisher.publish(msg)
                self.sent += 1
            except Exception:  # the context is shutting down: nothing left to deliver to
                return

    def stop(self) -> None:
        """Stop; messages still waiting are dropped (their link went down with the node)."""
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=1.0)
