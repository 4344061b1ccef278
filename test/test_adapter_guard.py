"""The adapter's divergence guard: like-for-like comparison, the backoff's floor and the freeze.

Issue #18: with gusts, every round of the flagship's adapter looked "diverged" (its best loss came
from a small early validation set, later sets held harder data), and the step size fell to 5e-26 of
its start. These tests fail when new hard data is taken for divergence, when a real divergence goes
unnoticed, or when the backoff passes its floor instead of freezing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter
from safe_ctrl_ros.learning.data import Batch
from safe_ctrl_ros.learning.model_file import ResidualModel, load_model
from safe_ctrl_ros.learning.pretrain import collect
from safe_ctrl_ros.learning.rounds import ACCEPTED, FROZEN, REJECTED, RollbackPolicy, Rounds, Schedule, Taken
from safe_ctrl_ros.learning.settings import adapter_settings
from safe_ctrl_ros.learning.trainers import ForwardGradientConfig, QzoFfTrainer

MODEL = Path(__file__).resolve().parents[1] / "config" / "models" / "quadrotor_2d_residual.npz"
DT = 0.02


@cache
def _start() -> ResidualModel:
    return load_model(MODEL, 6, 2)


@cache
def _data() -> Batch:
    """Transitions of the 30% heavier 2D quadrotor (the flagship's mismatch)."""
    return collect("quadrotor_2d", 3, 300, DT, (1.3, 1.3), seed=11)


def _adapter(lr: float, **cfg: float) -> OnlineAdapter:
    config = AdapterConfig(method="qzo_ff", batch_size=64, trainer=ForwardGradientConfig(eps=64, lr=lr),
                           **cfg)  # type: ignore[arg-type]
    return OnlineAdapter(_start(), systems.make("quadrotor_2d"), config)


def _feed(adapter: OnlineAdapter, lo: int, hi: int, gust: float, rng: np.random.Generator) -> None:
    """Transitions lo..hi-1 with white-noise 'gusts' of `gust` loss scales added to the next state
    (unlearnable: they vary in time, not with the state)."""
    data = _data()
    for i in range(lo, hi):
        x, u = data.x[i], data.u[i]
        noise = gust * adapter.scale * rng.standard_normal(adapter.scale.size)
        x_next = np.asarray(adapter.step_fn(x, u, np.zeros(6))).reshape(-1) + data.target[i] + noise
        adapter.add(x, u, x_next)


def test_harder_new_data_is_not_taken_for_divergence() -> None:
    """Rounds whose data get ever gustier (noise 0 .. 2 loss scales: the validation loss of any model
    rises 30-fold) at a stable step size: no restart, the step size stays, and versions still go out
    when training improves on the newest version on the same validation transitions."""
    adapter = _adapter(lr=1e-3)
    rng = np.random.default_rng(0)
    chunk = 100
    start_loss = []
    for r in range(9):
        _feed(adapter, r * chunk, (r + 1) * chunk, gust=0.25 * r, rng=rng)
        if not adapter.ready:
            continue
        adapter.train(10)
        start_loss.append(adapter.val_loss(adapter.start_net))
        adapter.propose()
    assert start_loss[-1] > 10 * start_loss[0]  # the data did get much harder
    assert adapter.restarts == 0
    assert adapter.lr_scale == 1.0
    assert not adapter.frozen
    assert len(adapter.history) >= 1


def test_a_real_divergence_is_detected_and_restarts_on_the_newest_version() -> None:
    adapter = _adapter(lr=1e-3)
    rng = np.random.default_rng(1)
    _feed(adapter, 0, 600, gust=0.0, rng=rng)
    for _ in range(10):
        adapter.train(20)
        if adapter.propose() is not None:
            break
    assert len(adapter.history) == 1
    newest = adapter.history[-1].net
    assert isinstance(adapter.trainer, QzoFfTrainer)
    adapter.trainer.cfg.lr = 50.0  # far beyond any stable step: the weights blow up
    adapter.train(20)
    assert adapter.val_loss() > 3 * adapter.val_loss(newest)
    assert adapter.propose() is None
    assert adapter.restarts == 1
    assert adapter.lr_scale == 0.5
    assert isinstance(adapter.trainer, QzoFfTrainer)
    assert adapter.trainer.cfg.lr == pytest.approx(0.5e-3)  # the configured step, halved
    np.testing.assert_array_equal(adapter.current_net().int_weights(), newest.int_weights())
    assert not adapter.frozen


def test_the_backoff_stops_at_its_floor_and_the_adapter_freezes() -> None:
    """lr 50 diverges at every step size down to the floor (1/8: three halvings); the fourth
    divergence freezes the adapter on the newest version instead of halving again, and it reports
    why; frozen, it neither trains nor offers versions."""
    adapter = _adapter(lr=50.0, min_lr_scale=0.125)
    rng = np.random.default_rng(2)
    _feed(adapter, 0, 400, gust=0.0, rng=rng)
    for _ in range(4):
        adapter.train(20)
        assert adapter.propose() is None
    assert adapter.restarts == 3
    assert adapter.lr_scale == 0.125
    assert adapter.frozen
    assert "diverged 4 times" in adapter.frozen_reason
    assert "min_lr_scale 0.125" in adapter.frozen_reason
    np.testing.assert_array_equal(adapter.current_net().int_weights(), adapter.start_net.int_weights())
    passes = adapter.forward_passes
    assert np.isnan(adapter.train(20))
    assert adapter.forward_passes == passes
    assert adapter.propose() is None


def test_a_round_that_freezes_reports_it_and_later_rounds_stay_frozen() -> None:
    adapter = _adapter(lr=50.0, min_lr_scale=0.5)
    schedule = Schedule.of(DT, 0.5, 0.5)
    rounds = Rounds(adapter, schedule, 20, RollbackPolicy(enabled=False))
    data = _data()
    rounds.state(0, data.x[0])
    outcomes, details = [], []
    for r in range(5):
        assert rounds.data_end is not None
        lo = r * 150
        transitions = [((i + 1) * schedule.dt_ns, data.x[i], data.u[i],
                        np.asarray(adapter.step_fn(data.x[i], data.u[i], np.zeros(6))).reshape(-1) + data.target[i])
                       for i in range(lo, lo + 150)]
        result = rounds.run(Taken(rounds.data_end, transitions))
        outcomes.append(result.outcome)
        details.append(result.detail)
        assert result.net is None  # nothing is published
    # 150 transitions, 120 for training: ready (batch 64, 20 validation) from the first round.
    assert outcomes == [REJECTED, FROZEN, FROZEN, FROZEN, FROZEN]
    assert "diverged 2 times" in details[1]
    assert "below min_lr_scale 0.5" in details[1]
    assert details[2] == details[1]  # the reason stays in every later round's report
    assert adapter.restarts == 1
    assert adapter.lr_scale == 0.5
    assert ACCEPTED not in outcomes


def test_the_floor_is_a_validated_setting() -> None:
    assert adapter_settings({}).config.min_lr_scale == pytest.approx(1 / 64)
    assert adapter_settings({"min_lr_scale": 0.25}).config.min_lr_scale == 0.25
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="min_lr_scale"):
            adapter_settings({"min_lr_scale": bad})
