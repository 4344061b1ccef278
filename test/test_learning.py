"""The 16w8a residual MLP and its trainers: integer inference, QZO-FF mechanics, baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safe_ctrl_ros.control import ResidualSpec
from safe_ctrl_ros.control.residual import dequantize
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning import (
    Backprop,
    Batch,
    ForwardGradientConfig,
    Fp32ForwardGradient,
    QuantizedMLP,
    QzoFfTrainer,
    normalized_mse,
)
from safe_ctrl_ros.learning.fixed_point import W_LIMIT, quantize_multiplier

SPEC = ResidualSpec(4, 1, hidden=(16, 16), activation="relu")


def problem(seed: int = 0, n: int = 400) -> tuple[Batch, QuantizedMLP, np.ndarray]:
    """A smooth target the MLP can learn: y = A tanh(B [x; u])."""
    rng = np.random.default_rng(seed)
    x, u = rng.normal(size=(n, 4)), rng.normal(size=(n, 1))
    a, b = rng.normal(size=(4, 3)) * 0.5, rng.normal(size=(3, 5))
    target = np.tanh(np.hstack([x, u]) @ b.T) @ a.T
    theta = np.random.default_rng(seed + 1).normal(0, 0.2, SPEC.num_params)
    q = QuantizedMLP.from_float(SPEC, SPEC.unpack(theta), np.hstack([x, u]))
    return Batch(x, u, target), q, target.std(axis=0)


def test_integer_forward_matches_float_within_the_documented_bound() -> None:
    data, q, _ = problem()
    fi, ff = q.forward_int(data.x, data.u), q.forward_float(data.x, data.u)
    gap, bound = np.abs(fi - ff), q.error_bound(data.x, data.u)
    assert np.all(gap <= bound)
    assert gap.max() > 0  # really integer arithmetic
    assert np.mean(gap) < 0.02 * np.std(ff)  # and close in practice


def test_weights_are_int16_and_activations_int8_scaled() -> None:
    _, q, _ = problem()
    assert all(t.dtype == np.int16 for t in q.tensors())
    assert all(np.abs(t).max() <= W_LIMIT for t in q.tensors())
    assert len(q.a_scale) == len(q.w)


def test_requantization_multiplier() -> None:
    for m in (1e-6, 0.0123, 0.5, 0.999, 3.7):
        m0, shift = quantize_multiplier(m)
        assert 2**30 <= m0 < 2**31
        assert m0 / 2**shift == pytest.approx(m, rel=1e-9)
    with pytest.raises(ConfigError):
        quantize_multiplier(0.0)


def test_model_update_round_trip_gives_the_controllers_weights() -> None:
    _, q, _ = problem()
    again = QuantizedMLP.from_update(SPEC, q.int_weights(), q.scales(), q.a_scale)
    np.testing.assert_array_equal(again.int_weights(), q.int_weights())
    theta = dequantize(SPEC, SPEC.layer_sizes, "relu", q.int_weights(), q.scales())
    np.testing.assert_array_equal(theta, q.theta())


def test_perturbation_is_undone_exactly() -> None:
    _, q, scale = problem()
    before = q.int_weights().copy()
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=200, sparsity=0.3))
    tr._perturb((0, 5, 1), +200)
    assert not np.array_equal(q.int_weights(), before)
    tr._perturb((0, 5, 1), -400)
    tr._perturb((0, 5, 1), +200)
    np.testing.assert_array_equal(q.int_weights(), before)


@pytest.mark.parametrize(("estimator", "lr", "m"), [("projected", 1e-2, 1), ("projected", 1e-2, 4), ("sign", 2e-3, 4)])
def test_qzo_ff_reduces_the_loss(estimator: str, lr: float, m: int) -> None:
    data, q, scale = problem()
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=lr, estimator=estimator, perturbations=m))  # type: ignore[arg-type]
    start = tr.loss(data)
    for step in range(400):
        idx = np.random.default_rng(step).integers(0, len(data), 64)
        tr.step(data.take(idx))
    assert tr.loss(data) < 0.8 * start
    assert tr.forward_passes == 400 * 2 * m
    assert all(np.abs(t).max() <= W_LIMIT for t in q.tensors())


def test_qzo_ff_is_deterministic_per_seed() -> None:
    results = []
    for seed in (3, 3, 4):
        data, q, scale = problem()
        tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=1e-2, seed=seed, momentum=0.5))
        for step in range(20):
            tr.step(data.take(np.arange(step, step + 32)))
        results.append(q.int_weights().copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


@pytest.mark.parametrize(("train", "changed"), [("last_layer", {4, 5}), ("biases", {1, 3, 5})])
def test_which_parameters_train(train: str, changed: set[int]) -> None:
    data, q, scale = problem()
    before = [t.copy() for t in q.tensors()]
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=1e-2, train=train))  # type: ignore[arg-type]
    for step in range(30):
        tr.step(data.take(np.arange(step, step + 32)))
    moved = {i for i, (a, b) in enumerate(zip(before, q.tensors(), strict=True)) if not np.array_equal(a, b)}
    assert moved == changed


def test_sparse_perturbations_touch_fewer_weights() -> None:
    data, q, scale = problem()
    before = q.int_weights().copy()
    tr = QzoFfTrainer(q, scale, ForwardGradientConfig(eps=16, lr=2e-3, estimator="sign", sparsity=0.9))
    tr.step(data.take(np.arange(64)))
    frac = np.mean(q.int_weights() != before)
    assert 0.0 < frac < 0.25


def test_baselines_reduce_the_same_loss() -> None:
    data, q, scale = problem()
    theta = q.theta()
    fg = Fp32ForwardGradient(SPEC, theta, scale, ForwardGradientConfig(eps=1e-3, lr=1e-2, perturbations=4))
    bp = Backprop(SPEC, theta, scale, lr=3e-3)
    same = normalized_mse(SPEC.evaluate(data.x, data.u, theta), data.target, scale)
    assert fg.loss(data) == pytest.approx(same, rel=1e-5)
    assert bp.loss(data) == pytest.approx(same, rel=1e-5)
    start = same
    for step in range(300):
        batch = data.take(np.random.default_rng(step).integers(0, len(data), 64))
        fg.step(batch)
        bp.step(batch)
    assert fg.loss(data) < 0.9 * start
    assert bp.loss(data) < 0.5 * start


def test_bad_trainer_options() -> None:
    _, q, scale = problem()
    with pytest.raises(ConfigError, match="eps"):
        QzoFfTrainer(q, scale, ForwardGradientConfig(eps=1000))
    with pytest.raises(ConfigError, match="estimator"):
        QzoFfTrainer(q, scale, ForwardGradientConfig(estimator="adam"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sparsity"):
        QzoFfTrainer(q, scale, ForwardGradientConfig(sparsity=1.0))
    tanh = ResidualSpec(4, 1, hidden=(4,), activation="tanh")
    with pytest.raises(ConfigError, match="ReLU"):
        QuantizedMLP.from_float(tanh, tanh.unpack(np.zeros(tanh.num_params)), np.zeros((2, 5)))


def test_adapter_drops_outlier_transitions() -> None:
    from safe_ctrl_ros import systems
    from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter
    from safe_ctrl_ros.learning.model_file import load_model

    start = load_model(Path(__file__).resolve().parents[1] / "config" / "models" / "quadrotor_2d_residual.npz")
    nominal = systems.make("quadrotor_2d")
    adapter = OnlineAdapter(start, nominal, AdapterConfig())
    x, u = np.array([0.0, 0.1, 1.0, 0.0, 0.0, 0.0]), nominal.equilibrium()[1]
    assert adapter.add(x, u, nominal.step(x, u, 0.02, 10))
    wild = nominal.step(x, u, 0.02, 10) + np.array([0, 0, 0, 0, 0, 0.5])  # a held command's pitch-rate jump
    assert not adapter.add(x, u, wild)
    assert adapter.outliers == 1
    assert not adapter.add(x, u, np.full(6, np.nan))


def test_bias_scale_is_at_least_the_weight_scale() -> None:
    """A small bias gets its layer's weight scale, not a finer one (QZO-FF's step divides by it)."""
    rng = np.random.default_rng(3)
    layers = [(rng.normal(0, 1.0, (o, i)), rng.normal(0, 1e-3, o)) for o, i in SPEC.shapes]
    q = QuantizedMLP.from_float(SPEC, layers, rng.normal(size=(50, 5)))
    assert all(bs >= ws for ws, bs in zip(q.w_scale, q.b_scale, strict=True))
    assert np.allclose(q.theta(), SPEC.pack(layers), atol=max(q.w_scale))  # still within half a step


def _heavier_adapter(method: str, lr: float) -> object:
    """An adapter on the 2D quadrotor fed a few hundred transitions of a 30% heavier vehicle."""
    from safe_ctrl_ros import systems
    from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter
    from safe_ctrl_ros.learning.model_file import load_model
    from safe_ctrl_ros.learning.pretrain import collect

    start = load_model(Path(__file__).resolve().parents[1] / "config" / "models" / "quadrotor_2d_residual.npz")
    cfg = AdapterConfig(method=method, trainer=ForwardGradientConfig(eps=64, lr=lr), bp_lr=lr)  # type: ignore[arg-type]
    adapter = OnlineAdapter(start, systems.make("quadrotor_2d"), cfg)
    data = collect("quadrotor_2d", 2, 200, 0.02, (1.3, 1.3), seed=5)
    for x, u, target in zip(data.x, data.u, data.target, strict=True):
        x_next = np.asarray(adapter.step_fn(x, u, np.zeros(6))).reshape(-1) + target
        adapter.add(x, u, x_next)
    assert adapter.ready
    return adapter


@pytest.mark.parametrize("method", ["qzo_ff", "bp"])
def test_diverged_training_restarts_from_the_newest_version_at_half_the_step(method: str) -> None:
    adapter = _heavier_adapter(method, lr=50.0)  # far beyond any stable step
    start = adapter.start_net  # type: ignore[attr-defined]
    adapter.train(20)  # type: ignore[attr-defined]
    passes = adapter.forward_passes  # type: ignore[attr-defined]
    assert adapter.propose() is None  # type: ignore[attr-defined]
    assert adapter.restarts == 1  # type: ignore[attr-defined]
    assert adapter.lr_scale == 0.5  # type: ignore[attr-defined]
    # Back on the start model's weights (a float method's are requantized with fresh scales).
    np.testing.assert_allclose(adapter.current_net().theta(), start.theta(), rtol=0,  # type: ignore[attr-defined]
                               atol=max(start.w_scale + start.b_scale))
    assert adapter.forward_passes == passes  # type: ignore[attr-defined]  # counted across the restart


def test_rollback_puts_every_method_back_on_the_previous_weights() -> None:
    adapter = _heavier_adapter("bp", lr=1e-3)
    for _ in range(20):
        adapter.train(20)  # type: ignore[attr-defined]
        if adapter.propose() is not None and len(adapter.history) == 2:  # type: ignore[attr-defined]
            break
    assert len(adapter.history) == 2  # type: ignore[attr-defined]
    first = adapter.history[0].net  # type: ignore[attr-defined]
    adapter.rollback()  # type: ignore[attr-defined]
    np.testing.assert_allclose(adapter.current_net().theta(), first.theta(), rtol=0,  # type: ignore[attr-defined]
                               atol=max(first.w_scale + first.b_scale))


def test_quantization_aware_backprop_sees_the_integer_forward_pass() -> None:
    """With the model's activation scales, backprop's forward pass is the 16w8a one (to float32
    rounding and the 16-bit weights' half steps), so what it minimizes is what the adapter publishes."""
    from safe_ctrl_ros.learning.data import normalized_mse
    from safe_ctrl_ros.learning.model_file import load_model
    from safe_ctrl_ros.learning.pretrain import collect

    start = load_model(Path(__file__).resolve().parents[1] / "config" / "models" / "quadrotor_2d_residual.npz")
    data = collect("quadrotor_2d", 1, 200, 0.02, (1.3, 1.3), seed=9)
    qat = Backprop(start.net.spec, start.net.theta(), start.loss_scale, activation_scales=start.net.a_scale)
    plain = Backprop(start.net.spec, start.net.theta(), start.loss_scale)
    integer = normalized_mse(start.net.forward_int(data.x, data.u), data.target, start.loss_scale)
    assert qat.loss(data) == pytest.approx(integer, rel=2e-3)
    assert abs(plain.loss(data) - integer) > 10 * abs(qat.loss(data) - integer)  # the rounding is what it adds
