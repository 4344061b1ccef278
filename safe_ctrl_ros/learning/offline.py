"""Re-running the adapter's training on recorded transitions (no ROS): try a setting before deploying it.

The recorded states, commands, (if recorded) the constraint monitor's verdicts and the controller's
disturbance estimates (ControllerStatus.disturbance_estimate, removed from the targets as the node
does with `targets.remove_disturbance`) go through the adapter node's own round loop
(safe_ctrl_ros.learning.rounds): the same rounds on the recording's own (sim) clock, the same
transitions per round in stamp order, the same rollback policy. As in a lockstep run on board, the
result is deterministic. The run is open loop: the recorded robot was
driven by whatever model the controller had then, not by the versions trained here (so a rollback
here replays the policy on the violations the recorded run had).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import OnlineAdapter
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.model_file import ResidualModel
from safe_ctrl_ros.learning.rounds import ACCEPTED, NOT_READY, ROLLED_BACK, Rounds
from safe_ctrl_ros.learning.settings import AdapterSettings
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel


@dataclass
class Round:
    t: float  # s of recording time
    train_loss: float
    val_loss: float
    version: int  # the version this round published, 0 if none (a rollback to the start model: 0 too)
    outcome: str = ACCEPTED  # rounds.ACCEPTED | REJECTED | ROLLED_BACK | FROZEN


@dataclass
class RetrainResult:
    transitions: int = 0
    outliers: int = 0
    skipped: int = 0  # states without the previous state or its command
    rollbacks: int = 0
    start_val_loss: float = float("nan")
    best_val_loss: float = float("nan")
    rounds: list[Round] = field(default_factory=list)
    best: QuantizedMLP | None = None  # the newest published version (None: none beat the start model)
    memory_bytes: int = 0
    step_time_ms: float = 0.0
    # Whether the controller's disturbance estimates were removed from the targets (settings'
    # targets.remove_disturbance and estimates given: a bag recorded before the field has none).
    disturbance_removed: bool = False

    @property
    def versions(self) -> int:
        return sum(1 for r in self.rounds if r.version)

    def summary(self) -> dict[str, object]:
        gain = 1.0 - self.best_val_loss / self.start_val_loss if self.start_val_loss > 0 else float("nan")
        return {"transitions": self.transitions, "outliers": self.outliers, "skipped": self.skipped,
                "rounds": len(self.rounds), "versions": self.versions,
                "rollbacks": self.rollbacks, "start_val_loss": self.start_val_loss,
                "best_val_loss": self.best_val_loss, "val_loss_reduction": gain,
                "training_memory_bytes": self.memory_bytes, "step_time_ms": self.step_time_ms,
                "disturbance_removed": self.disturbance_removed}


def retrain(
    states: Sequence[tuple[int, FloatArray]],
    commands: Mapping[int, FloatArray],
    start: ResidualModel,
    nominal: SymbolicModel,
    settings: AdapterSettings,
    verdicts: Sequence[tuple[int, bool, str]] = (),
    disturbances: Mapping[int, FloatArray] | None = None,
) -> RetrainResult:
    """Train on `states` (stamp ns, x) and `commands` (stamp of the state they answer -> u), with the
    monitor's `verdicts` (stamp, any violation, safety request reason) for the rollback policy and
    the freezes, and the controller's `disturbances` (stamp of the state its status answers -> the
    disturbance estimate, maybe empty) removed from the targets when `settings.remove_disturbance`,
    each step then needing its estimate as on board (learning/rounds.py). None (e.g. a bag recorded
    before ControllerStatus had the field): nothing removed, whatever the setting."""
    if not states:
        raise ConfigError("no states to train on")
    if abs(start.dt - settings.dt) > 1e-12:
        raise ConfigError(f"the model file is for dt={start.dt} s, the settings say dt={settings.dt} s")
    if settings.update_period <= 0 or settings.steps_per_update < 1:
        raise ConfigError("update_period > 0 and steps_per_update >= 1 are required")
    adapter = OnlineAdapter(start, nominal, settings.config)
    remove = settings.remove_disturbance and disturbances is not None
    rounds = Rounds(adapter, settings.schedule(), settings.steps_per_update, settings.policy, disturbances=remove)
    ordered = sorted(states, key=lambda s: s[0])
    for stamp, x in ordered:
        rounds.state(stamp, x)
    for stamp, u in commands.items():
        rounds.command(stamp, u)
    for stamp, d in (disturbances or {}).items():
        rounds.disturbance(stamp, d)
    for stamp, violated, reason in verdicts:
        rounds.verdict(stamp, violated, reason)
    result = RetrainResult(disturbance_removed=remove)
    last = ordered[-1][0]
    steps, step_ms = 0, 0.0
    while (nxt := rounds.next_round()) is not None and nxt[0] <= last:
        done = rounds.run(rounds.take())
        result.transitions += done.transitions
        result.skipped += done.missing
        if done.outcome == ROLLED_BACK or (done.outcome != NOT_READY and done.train_loss == done.train_loss):
            number = done.version if done.changes_model else 0
            result.rounds.append(Round(done.data_end_ns * 1e-9, done.train_loss, done.val_loss, number,
                                       done.outcome))
        if done.step_time_ms:
            steps += settings.steps_per_update
            step_ms += done.step_time_ms * settings.steps_per_update
    # The states after the last round's end: their transitions are counted as seen (not trained on).
    tail = rounds.add_tail(last)
    result.transitions += tail[0]
    result.skipped += tail[1]
    result.rollbacks = rounds.rollbacks
    result.outliers = adapter.outliers
    if adapter.ready:
        result.start_val_loss = adapter.val_loss(adapter.start_net)
        newest = adapter.history[-1] if adapter.history else None
        result.best = newest.net if newest else None
        result.best_val_loss = adapter.val_loss(result.best) if result.best else result.start_val_loss
    result.memory_bytes = adapter.extra_bytes()
    result.step_time_ms = step_ms / steps if steps else 0.0
    return result
