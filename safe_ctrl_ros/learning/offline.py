"""Re-running the adapter's training on recorded transitions (no ROS): try a setting before deploying it.

The recorded states and commands are fed to an `OnlineAdapter` in stamp order, with a training
round every `update_period` of the recording's own (sim) time, as the adapter node schedules them.
Unlike on board, a round here always finishes before the next transition arrives, so the result
is deterministic. The run is open loop: the recorded robot was driven by whatever model the
controller had then, not by the versions trained here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import OnlineAdapter
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.model_file import ResidualModel
from safe_ctrl_ros.learning.settings import AdapterSettings
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel


@dataclass
class Round:
    t: float  # s of recording time
    train_loss: float
    val_loss: float
    version: int  # the version this round published, 0 if none


@dataclass
class RetrainResult:
    transitions: int = 0
    outliers: int = 0
    skipped: int = 0  # states without the previous state or its command
    start_val_loss: float = float("nan")
    best_val_loss: float = float("nan")
    rounds: list[Round] = field(default_factory=list)
    best: QuantizedMLP | None = None  # the newest published version (None: none beat the start model)
    memory_bytes: int = 0
    step_time_ms: float = 0.0

    @property
    def versions(self) -> int:
        return sum(1 for r in self.rounds if r.version)

    def summary(self) -> dict[str, object]:
        gain = 1.0 - self.best_val_loss / self.start_val_loss if self.start_val_loss > 0 else float("nan")
        return {"transitions": self.transitions, "outliers": self.outliers, "skipped": self.skipped,
                "rounds": len(self.rounds), "versions": self.versions, "start_val_loss": self.start_val_loss,
                "best_val_loss": self.best_val_loss, "val_loss_reduction": gain,
                "training_memory_bytes": self.memory_bytes, "step_time_ms": self.step_time_ms}


def retrain(
    states: Sequence[tuple[int, FloatArray]],
    commands: Mapping[int, FloatArray],
    start: ResidualModel,
    nominal: SymbolicModel,
    settings: AdapterSettings,
) -> RetrainResult:
    """Train on `states` (stamp ns, x) and `commands` (stamp of the state they answer -> u)."""
    if not states:
        raise ConfigError("no states to train on")
    if abs(start.dt - settings.dt) > 1e-12:
        raise ConfigError(f"the model file is for dt={start.dt} s, the settings say dt={settings.dt} s")
    adapter = OnlineAdapter(start, nominal, settings.config)
    dt_ns = round(settings.dt * 1e9)
    period_ns = round(settings.update_period * 1e9)
    if period_ns <= 0 or settings.steps_per_update < 1:
        raise ConfigError("update_period > 0 and steps_per_update >= 1 are required")
    ordered = sorted(states, key=lambda s: s[0])
    by_stamp = dict(ordered)
    result = RetrainResult()
    next_round = ordered[0][0] + period_ns
    train_wall = 0.0
    steps = 0
    for stamp, x_next in ordered:
        while stamp >= next_round:
            if adapter.ready:
                begin = time.perf_counter()
                loss = adapter.train(settings.steps_per_update)
                train_wall += time.perf_counter() - begin
                steps += settings.steps_per_update
                version = adapter.propose()
                number = version.number if version else 0
                result.rounds.append(Round(next_round * 1e-9, loss, adapter.val_loss(), number))
            next_round += period_ns
        prev = stamp - dt_ns
        if prev in by_stamp and prev in commands:
            if adapter.add(by_stamp[prev], commands[prev], x_next):
                result.transitions += 1
        else:
            result.skipped += 1
    result.outliers = adapter.outliers
    if adapter.ready:
        result.start_val_loss = adapter.val_loss(adapter.start_net)
        newest = adapter.history[-1] if adapter.history else None
        result.best = newest.net if newest else None
        result.best_val_loss = adapter.val_loss(result.best) if result.best else result.start_val_loss
    result.memory_bytes = adapter.extra_bytes()
    result.step_time_ms = train_wall * 1e3 / steps if steps else 0.0
    return result

