"""QZO-FF's options (issue #18): the perturbation distribution, momentum-guided sampling, sparsity by
magnitude, kernel-wise and per-tensor (ZO-Adam) normalization, sharpness-aware perturbation. Each test
checks what the option is documented to do (safe_ctrl_ros/learning/trainers.py), not only that it runs."""

from __future__ import annotations

from math import erf, sqrt

import numpy as np
import pytest

from helpers.learning_problem import SPEC, problem
from safe_ctrl_ros.control import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning import Batch, ForwardGradientConfig, Fp32ForwardGradient, QuantizedMLP, QzoFfTrainer
from safe_ctrl_ros.learning.fixed_point import GUARD, W_LIMIT
from safe_ctrl_ros.learning.trainers import gaussian_second_moment


def test_gaussian_second_moment_is_that_of_the_clipped_rounded_normal() -> None:
    # limit 1: z = 0 on |n| < 0.5, else +-1: E[z^2] = P(|n| >= 0.5).
    assert gaussian_second_moment(1) == pytest.approx(1.0 - erf(0.5 / sqrt(2.0)), rel=1e-12)
    draws = np.clip(np.rint(np.random.default_rng(0).standard_normal(2_000_000)), -4, 4)
    assert gaussian_second_moment(4) == pytest.approx(float(np.mean(draws**2)), rel=3e-3)
    assert gaussian_second_moment(4) == pytest.approx(1.0 + 1.0 / 12.0, rel=2e-3)  # rounding adds 1/12


def test_gaussian_perturbation_is_integer_within_the_guard_and_undone_exactly() -> None:
    _, q, scale = problem()
    before = q.int_weights().copy()
    eps = 128  # z within +-2: the clipped tails (|n| >= 1.5, 13%) land on the limit
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=eps, distribution="gaussian"))
    z = np.concatenate([tr._z((0, 1, 0), i, t.shape).reshape(-1) for i, t in enumerate(q.tensors())])
    assert set(np.unique(z)) == {-2, -1, 0, 1, 2}
    assert tr.z_moment == pytest.approx(gaussian_second_moment(GUARD // eps))
    many = np.concatenate([tr._z((0, k, 0), 2, q.w[1].shape).reshape(-1) for k in range(200)])
    assert np.mean(many.astype(float) ** 2) == pytest.approx(tr.z_moment, rel=0.02)  # the estimate's divisor
    tr._perturb((0, 1, 0), +eps)
    assert np.abs(q.int_weights().astype(int) - before).max() == GUARD  # up to the guard, never past it
    tr._perturb((0, 1, 0), -2 * eps)
    tr._perturb((0, 1, 0), +eps)
    np.testing.assert_array_equal(q.int_weights(), before)


def test_guided_sampling_follows_the_running_estimate() -> None:
    _, q, scale = problem()
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, guidance=0.6))
    assert tr.guide is not None
    direction = np.random.default_rng(5).choice([-1.0, 1.0], size=tr.guide[2].shape).astype(np.float32)
    tr.guide[2][...] = direction
    agree = [np.mean(tr._z((0, k, 0), 2, direction.shape) == direction) for k in range(50)]
    # An entry follows the sign with probability 0.6, else a fair coin: 0.6 + 0.4 / 2 = 0.8.
    assert float(np.mean(agree)) == pytest.approx(0.8, abs=0.01)
    # Without a running estimate yet (all zeros), z is the plain Rademacher draw.
    plain = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16))
    np.testing.assert_array_equal(tr._z((0, 1, 0), 0, q.w[0].shape), plain._z((0, 1, 0), 0, q.w[0].shape))


def test_a_guided_step_updates_the_running_estimate() -> None:
    data, q, scale = problem()
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=1e-2, guidance=0.5))
    assert tr.guide is not None
    tr.step(data.take(np.arange(64)))
    for g in tr.guide:
        assert np.count_nonzero(g) == g.size  # (1 - beta) x the first estimate, nonzero everywhere


@pytest.mark.parametrize("by", ["large", "small"])
def test_sparsity_by_magnitude_perturbs_the_chosen_half(by: str) -> None:
    data, q, scale = problem()
    before = [t.copy() for t in q.tensors()]
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=1e-2, sparsity=0.5, sparse_by=by))  # type: ignore[arg-type]
    tr._magnitude_masks()
    for i, t in enumerate(before):
        mask = tr.masks[i]
        assert mask is not None
        assert int(mask.sum()) == round(0.5 * t.size)
        mag = np.abs(t.astype(int))
        kept, dropped = mag[mask == 1], mag[mask == 0]
        if dropped.size:
            assert (kept.min() >= dropped.max()) if by == "large" else (kept.max() <= dropped.min())
        z = tr._z((0, 0, 0), i, t.shape)
        np.testing.assert_array_equal(z != 0, mask == 1)
    tr.step(data.take(np.arange(64)))
    for i, (t, b) in enumerate(zip(q.tensors(), before, strict=True)):
        moved = t != b
        assert tr.masks[i] is not None
        assert not np.any(moved & (tr.masks[i] == 0))  # only perturbed entries are updated


def test_kernel_normalization_scales_each_row_by_its_weight_rms() -> None:
    data, q, scale = problem()
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=1e-2, normalize="kernel"))
    w = q.w[1]
    factors = tr._kernel_factors(w)
    assert factors is not None
    rows = np.sqrt(np.mean(w.astype(float) ** 2, axis=1))
    np.testing.assert_allclose(factors, rows / np.sqrt(np.mean(rows**2)), rtol=1e-5)
    assert tr._kernel_factors(q.b[1]) is None  # a bias vector is one kernel: unscaled
    # In a step, each row's update is the plain estimate's times its factor (same seeds, same rounding
    # draws: only the step size per row differs).
    plain_q = q.copy()
    plain = QzoFfTrainer(plain_q, scale, ForwardGradientConfig(eps=16, lr=1e-2))
    before = w.astype(float).copy()
    batch = data.take(np.arange(64))
    tr.step(batch)
    plain.step(batch)
    moved, moved_plain = np.abs(q.w[1] - before).sum(axis=1), np.abs(plain_q.w[1] - before).sum(axis=1)
    np.testing.assert_allclose(moved / moved_plain, factors, rtol=0.1)


def test_tensor_normalization_makes_a_float_step_of_lr_per_entry() -> None:
    """ZO-Adam per tensor: after the first step (bias-corrected second moment = the estimate's own
    mean square) every tensor's float-space step has an RMS of lr, whatever the tensor's scale."""
    data, q, scale = problem()
    before = [t.astype(float).copy() for t in q.tensors()]
    lr = 2e-3
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=lr, normalize="tensor"))
    tr.step(data.take(np.arange(64)))
    for t, b, s in zip(q.tensors(), before, q.scales(), strict=True):
        step = (t.astype(float) - b) * s
        rms = float(np.sqrt(np.mean(step**2)))
        # Stochastic rounding to whole integer units adds at most one unit's noise per entry.
        assert rms == pytest.approx(lr, abs=s + 0.05 * lr)
    assert all(m > 0 for m in tr.second_moment)


@pytest.mark.parametrize("options", [
    {"distribution": "gaussian"},
    {"guidance": 0.5, "lr": 3e-3},
    {"sparsity": 0.5, "sparse_by": "large"},
    {"sparsity": 0.5, "sparse_by": "small"},
    {"normalize": "kernel"},
    {"normalize": "tensor", "lr": 3e-3},
    {"sharpness": 64},
])
def test_every_option_reduces_the_loss(options: dict[str, object]) -> None:
    data, q, scale = problem()
    cfg = ForwardGradientConfig(**{"eps": 16, "lr": 1e-2, **options})  # type: ignore[arg-type]
    tr = QzoFfTrainer(q, scale, cfg)
    start = tr.loss(data)
    for step in range(400):
        tr.step(data.take(np.random.default_rng(step).integers(0, len(data), 64)))
    assert tr.loss(data) < 0.8 * start
    assert all(np.abs(t).max() <= W_LIMIT for t in q.tensors())


def test_qzo_ff_scratch_is_flat_in_depth_and_below_one_int8_perturbation() -> None:
    """The in-place update (issue #18): beyond inference a step holds one tensor's int8 perturbation
    and a block's temporaries (plus the loss buffers), never a float copy of a tensor, so its extra
    memory does not grow with depth and stays below the largest tensor's int8 perturbation."""
    from safe_ctrl_ros.learning.memory import training_memory

    def extra(depth: int, width: int) -> int:
        spec = ResidualSpec(6, 2, hidden=(width,) * (depth - 1), activation="relu")
        rng = np.random.default_rng(0)
        theta = rng.normal(0.0, 1.0 / np.sqrt(width), spec.num_params)
        batch = Batch(rng.normal(size=(32, 6)), rng.normal(size=(32, 2)), rng.normal(size=(32, 6)))
        net = QuantizedMLP.from_float(spec, spec.unpack(theta), np.hstack([batch.x, batch.u]))
        return training_memory(QzoFfTrainer(net, np.ones(6), ForwardGradientConfig(eps=16, lr=1e-12)),
                               batch).extra_bytes

    shallow, deep = extra(3, 128), extra(12, 128)
    assert deep == pytest.approx(shallow, rel=0.05)
    # A float32 copy of one 128 x 128 tensor alone would be 64 KiB; its int8 perturbation is 16 KiB.
    assert deep < 128 * 128


def test_sharpness_estimates_at_the_neighbourhood_point_and_undoes_the_shift() -> None:
    """sharpness rho: step k's two-point estimate is taken at w + rho sign(step k-1's estimate), and
    the shift is undone exactly (with a step size far below one integer unit nothing else moves)."""
    data, q, scale = problem()
    rho, eps = 128, 64
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=eps, lr=1e-15, sharpness=rho))
    start = q.int_weights().copy()
    tr.step(data)  # no previous estimate: taken at w
    assert tr.previous is not None
    np.testing.assert_array_equal(q.int_weights(), start)
    (seed1,), (c1,) = tr.previous
    assert c1 != 0.0

    # The expected estimate, by hand on q itself (restored after).
    probe = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=eps, lr=1e-15))
    direction = [np.sign(np.float32(c1) * probe._z(seed1, i, t.shape)).astype(np.int16)
                 for i, t in enumerate(q.tensors())]
    for t, d in zip(q.tensors(), direction, strict=True):
        t += np.int16(rho) * d
    seed2 = (0, 1, 0)  # step 2's perturbation (cfg.seed 0, step 1, j 0)
    probe._perturb(seed2, +eps)
    l_plus = probe.loss(data)
    probe._perturb(seed2, -2 * eps)
    l_minus = probe.loss(data)
    probe._perturb(seed2, +eps)
    for t, d in zip(q.tensors(), direction, strict=True):
        t -= np.int16(rho) * d
    np.testing.assert_array_equal(q.int_weights(), start)
    expected = (l_plus - l_minus) / (2 * eps)

    loss = tr.step(data)
    np.testing.assert_array_equal(q.int_weights(), start)  # the shift was undone exactly
    (_,), (c2,) = tr.previous
    assert c2 == pytest.approx(expected, rel=1e-12)
    assert loss == pytest.approx(0.5 * (l_plus + l_minus), rel=1e-12)
    # ... and it differs from the estimate at w itself (the shift matters on this problem)
    plain = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=eps, lr=1e-15))
    plain.steps = 1
    plain._perturb(seed2, +eps)
    at_w = plain.loss(data)
    plain._perturb(seed2, -2 * eps)
    at_w -= plain.loss(data)
    plain._perturb(seed2, +eps)
    assert abs(at_w / (2 * eps) - c2) > 1e-3 * abs(c2)


def test_options_are_validated_and_qzo_ff_only() -> None:
    _, q, scale = problem()
    for bad, match in (({"distribution": "uniform"}, "distribution"), ({"guidance": 1.0}, "guidance"),
                       ({"sparse_by": "median"}, "sparse_by"), ({"normalize": "layer"}, "normalize"),
                       ({"sharpness": GUARD - 15}, "sharpness"), ({"sharpness": -1}, "sharpness")):
        with pytest.raises(ConfigError, match=match):
            QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, **bad))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="QZO-FF only"):
        Fp32ForwardGradient(SPEC, q.theta(), scale, ForwardGradientConfig(eps=1e-3, normalize="tensor"))
    with pytest.raises(ConfigError, match="QZO-FF only"):
        Fp32ForwardGradient(SPEC, q.theta(), scale, ForwardGradientConfig(eps=1e-3, sharpness=8))
