"""Communication faults on the state and command streams: delay with jitter, and drops.

    - name: radio_delay
      target: state_link        # state_link (plant/state -> state) | command_link (cmd -> plant/cmd)
      kind: delay
      delay: 0.005              # s of wall time
      jitter: 0.002             # s: each message waits delay + U(-jitter, +jitter) (never < 0)
    - name: radio_loss
      target: command_link
      kind: drop
      probability: 0.01         # each message is lost with this probability

Like every disturbance, a fault has its own seeded generator and a window (start, duration in
sim seconds); it draws once per message it sees while active, so the same messages in the same
order meet the same fate. The delay is wall time: it is what a real link adds, whatever the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from safe_ctrl_ros.config_check import choice, no_unknown_keys, number
from safe_ctrl_ros.errors import ConfigError

LINK_TARGETS = ("state_link", "command_link")
LINK_KINDS = ("delay", "drop")
MAX_DELAY = 10.0  # s: beyond this a "delay" is an outage; use a drop


@dataclass
class LinkFault:
    kind: str
    start: float
    duration: float  # s; 0 = until the end of the run
    delay: float
    jitter: float
    probability: float
    rng: np.random.Generator

    def active(self, t: float) -> bool:
        end = self.start + self.duration if self.duration > 0 else math.inf
        return self.start - 1e-9 <= t < end - 1e-9

    def draw(self) -> tuple[bool, float]:
        """(dropped, delay in s) for one message."""
        if self.kind == "drop":
            return bool(self.rng.random() < self.probability), 0.0
        jitter = self.rng.uniform(-self.jitter, self.jitter) if self.jitter > 0 else 0.0
        return False, max(0.0, self.delay + jitter)


def make_link_fault(where: str, spec: dict[str, Any], rng: np.random.Generator) -> LinkFault:
    spec = dict(spec)
    kind = choice(spec.pop("kind", None), LINK_KINDS, f"{where}.kind")
    options = ["delay", "jitter"] if kind == "delay" else ["probability"]
    known = {"name", "target", "enabled", "kind", "start", "duration", *options}
    no_unknown_keys(spec, known, f"{where} (kind {kind})")
    start = number(spec.pop("start", 0.0), f"{where}.start", 0.0)
    duration = number(spec.pop("duration", 0.0), f"{where}.duration", 0.0)
    delay = jitter = probability = 0.0
    if kind == "delay":
        if "delay" not in spec:
            raise ConfigError(f"{where}.delay: required for kind delay (s of wall time)")
        delay = number(spec.pop("delay"), f"{where}.delay", 0.0, MAX_DELAY)
        jitter = number(spec.pop("jitter", 0.0), f"{where}.jitter", 0.0, MAX_DELAY)
    else:
        if "probability" not in spec:
            raise ConfigError(f"{where}.probability: required for kind drop (0 to 1)")
        probability = number(spec.pop("probability"), f"{where}.probability", 0.0, 1.0)
    return LinkFault(kind, start, duration, delay, jitter, probability, rng)
