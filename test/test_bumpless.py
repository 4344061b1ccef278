"""The controller's switch to new residual weights and its behaviour after a rollback, measured in
the core loop (test/helpers/switch_loop.py; docs/CONTROLLERS.md; figures: bench/bumpless_switch.py)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import switch_loop as loop
from helpers.switch_loop import BOUND, DT, FIG8, MODEL, ROLLBACK_END, ROLLBACK_FROM, ROLLBACK_TO, Q, R
from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController, Nmpc, NmpcConfig
from safe_ctrl_ros.control.supervisor import SupervisedController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.systems.base import FloatArray
from safe_ctrl_ros.tasks import make_task


@pytest.fixture(scope="module")
def theta() -> FloatArray:
    return loop.pretrained_theta()


@pytest.fixture(scope="module")
def transients(theta: FloatArray) -> dict[str, float]:
    return loop.transients(theta)


@pytest.fixture(scope="module")
def rollback_runs(theta: FloatArray) -> dict[str, tuple[FloatArray, FloatArray, FloatArray]]:
    return loop.rollback_runs(theta)


def test_blended_switch_is_bumpless(transients: dict[str, float]) -> None:
    """Blended over BLEND solves with the warm start kept, the switch moves the command by at most
    BOUND x the largest step-to-step change of the same loop without a switch; an instant switch
    and a cold restart (the warm start dropped) do not meet that bound, so the test can fail.
    Measured: without a switch 0.00061, blended 0.00095 (1.55x), instant 0.0049 (8.0x), cold 0.0048 (7.8x)."""
    bound = BOUND * transients["none"]
    assert transients["blended"] <= bound, transients
    assert transients["instant"] > bound, transients
    assert transients["cold"] > bound, transients


def test_blend_reaches_the_new_weights(theta: FloatArray) -> None:
    """After BLEND solves the NMPC predicts with exactly the new weights, and the blend is over."""
    nominal = systems.make("quadrotor_2d")
    task = make_task(nominal, FIG8)
    nmpc = Nmpc(nominal, task, NmpcConfig(Q=Q, R=R), None, load_model(MODEL, 6, 2).net.spec)
    law = SupervisedController(nominal, task, LqrController(nominal, Q, R, DT, "exact", task.goal),  # type: ignore[arg-type]
                               nmpc, blend_steps=4)
    nmpc.set_residual_weights(0.25 * theta)
    law.set_residual_weights(0.5 * theta)
    x = task.reference(0.0)[0][0]
    seen = []
    for k in range(5):
        law.compute(x, k * DT)
        seen.append(float(np.median(nmpc.theta[theta != 0] / theta[theta != 0])))
    assert seen == pytest.approx([0.3125, 0.375, 0.4375, 0.5, 0.5])
    assert not law.blending
    with pytest.raises(ConfigError):
        law.set_residual_weights(theta[:-1])


def test_after_a_rollback_the_loop_stays_in_its_constraints_and_recovers(
        rollback_runs: dict[str, tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    """The controller's side of a rollback (the adapter's: test_validation.py). After the rollback
    no constraint is violated, and over the last 60 steps (from 1.6 s after the rollback) the mean
    position error is within 1.25x the verified version's over the same steps, while the bad
    version raised it more than 2x while it was in force."""
    _, ref, _ = rollback_runs["verified"]
    _, err, violated = rollback_runs["rollback"]
    window = slice(ROLLBACK_END - 60, ROLLBACK_END)
    bad = slice(ROLLBACK_FROM, ROLLBACK_TO)
    assert err[bad].mean() > 2.0 * ref[bad].mean()
    assert not violated[ROLLBACK_TO:].any()
    assert err[window].mean() <= 1.25 * ref[window].mean()
    # The bad version kept does not recover within that bound (the test can fail). Measured: the
    # verified version 0.0134 m, after the rollback 0.0120 m, the bad version kept 0.0268 m.
    _, kept, _ = rollback_runs["kept"]
    assert kept[window].mean() > 1.25 * ref[window].mean()
