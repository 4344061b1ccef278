"""The 16w8a residual MLP and its trainers: integer inference, QZO-FF mechanics, baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import int_reference
from helpers.learning_problem import SPEC, problem
from safe_ctrl_ros.control import ResidualSpec
from safe_ctrl_ros.control.residual import dequantize
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning import (
    Backprop,
    ForwardGradientConfig,
    Fp32ForwardGradient,
    QuantizedMLP,
    QzoFfTrainer,
    fixed_point,
    normalized_mse,
)
from safe_ctrl_ros.learning.fixed_point import W_LIMIT, quantize_multiplier

REPO = Path(__file__).resolve().parents[1]


def test_integer_forward_matches_float_within_the_documented_bound() -> None:
    data, q, _ = problem()
    fi, ff = q.forward_int(data.x, data.u), q.forward_float(data.x, data.u)
    gap, bound = np.abs(fi - ff), q.error_bound(data.x, data.u)
    assert np.all(gap <= bound)
    assert gap.max() > 0  # really integer arithmetic
    assert np.mean(gap) < 0.02 * np.std(ff)  # and close in practice


def crafted(spec: ResidualSpec, layers: list[tuple[list[list[int]], list[int]]], scales: list[float],
            a_scale: list[float]) -> QuantizedMLP:
    """A model from hand-picked integer tensors and scales (W_1, b_1, W_2, ...)."""
    flat = [v for w, b in layers for v in [*np.asarray(w).reshape(-1).tolist(), *b]]
    return QuantizedMLP.from_update(spec, np.array(flat, dtype=np.int16), scales, a_scale)


def pinned(q: QuantizedMLP, rows: list[list[float]], nx: int) -> np.ndarray:
    """forward_int on rows of [x; u], checked bit for bit against the plain-int reference."""
    xu = np.array(rows, dtype=np.float64)
    out = q.forward_int(xu[:, :nx], xu[:, nx:])
    expected = np.array(int_reference.forward_net(q, xu[:, :nx], xu[:, nx:]))
    np.testing.assert_array_equal(out, expected)
    return out


def test_integer_pass_rounds_ties_as_documented() -> None:
    """Inputs and biases round half to even, requantization rounds half up (by hand, and pinned)."""
    spec = ResidualSpec(1, 1, hidden=(3,), activation="relu")
    # Layer 1: acc_scale 0.5, bias b * 0.75 / 0.5 = 1.5 b (ties for odd b), m = 0.5 / 1 (ties for odd acc).
    q = crafted(spec, [([[1, 0], [0, 1], [1, 1]], [1, -1, 3]), ([[1, 2, 4]], [0])], [0.5, 0.75, 1.0, 1.0], [1.0, 1.0])
    assert quantize_multiplier(0.5) == (2**30, 31)
    out = pinned(q, [[2.5, 0.5], [3.0, -1.5], [0.0, 0.0], [-2.5, 3.5]], 1)
    # [2.5, 0.5] -> a = [2, 0]; acc = [4, -2, 6] -> [2, 0, 3] -> 2 + 12 = 14 (ties up: 19).
    # [3, -1.5] -> a = [3, -2]; acc = [5, -4, 5] -> [3, 0, 3] (2.5 rounds up) -> 15 (to even: 10).
    # [0, 0]: the biases alone, [2, -2, 4] (1.5, -1.5, 4.5 to even) -> [1, 0, 2] -> 9 (half up: 13).
    # [-2.5, 3.5] -> a = [-2, 4]; acc = [0, 2, 6] -> [0, 1, 3] -> 14.
    np.testing.assert_array_equal(out, [[14.0], [15.0], [9.0], [14.0]])
    assert not np.array_equal(out, q.forward_float([[2.5], [3.0], [0.0], [-2.5]], [[0.5], [-1.5], [0.0], [3.5]]))


def test_integer_pass_saturates_int8_activations_and_takes_the_whole_int16_range() -> None:
    spec = ResidualSpec(1, 1, hidden=(3,), activation="relu")
    # Unit scales: the hidden activation is the accumulator itself, saturated to [0, 127].
    q = crafted(spec, [([[32767, 0], [0, -32768], [0, -1]], [0, 0, -1]), ([[1, 1, 1]], [0])],
                [1.0, 1.0, 1.0, 1.0], [1.0, 1.0])
    out = pinned(q, [[1000.0, -1000.0], [-1000.0, 1000.0], [0.6, -0.5]], 1)
    # [1000, -1000] -> a = [127, -127] (not -128); acc = [4161409, 4161536, 126] -> [127, 127, 126] -> 380.
    # [-1000, 1000] -> acc all negative -> ReLU 0.  [0.6, -0.5] -> a = [1, 0]; acc = [32767, 0, -1] -> 127.
    np.testing.assert_array_equal(out, [[380.0], [0.0], [127.0]])


def test_integer_accumulator_saturates_at_int32_and_never_wraps() -> None:
    """600 inputs of 127 x 32767 sum to 2.5e9 > 2^31: the accumulator saturates (a wrap would flip
    its sign); a bias beyond int32 is saturated where it is converted (an NPU stores it as int32)."""
    spec = ResidualSpec(2, 598, hidden=(), activation="relu")  # one (output) layer, 600 inputs
    w_max = [32767] * 600
    w_min_half = [-32768] * 300 + [0] * 300
    q = crafted(spec, [([w_max, w_min_half], [0, 32767])], [1.0, 1e6], [1.0])
    ones = [[1000.0] * 600, [-1000.0] * 600]
    out = pinned(q, ones, 2)
    # Output 0: +-600 * 127 * 32767 saturated. Output 1: the bias 3.3e10 saturated to 2^31 - 1 first,
    # then -/+ 300 * 127 * 32768 (within int32).
    np.testing.assert_array_equal(out, [[2**31 - 1, 2**31 - 1 - 1248460800], [-(2**31), 2**31 - 1]])
    # In a hidden layer the saturated accumulator is requantized: m = 1 / 2^25 gives
    # (2^31 - 1) / 2^25 = 63.99997 -> 64 (unsaturated 74, wrapped 0).
    spec = ResidualSpec(1, 599, hidden=(1,), activation="relu")
    q = crafted(spec, [([[32767] * 600], [0]), ([[1]], [0])], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0**25])
    out = pinned(q, [[1000.0] * 600], 1)
    np.testing.assert_array_equal(out, [[64.0 * 2**25]])


def test_integer_pass_is_the_documented_arithmetic_bit_for_bit() -> None:
    """Random and pretrained networks, inside and far outside the calibrated input range."""
    from safe_ctrl_ros.learning.model_file import load_model

    data, q, _ = problem()
    xu = np.hstack([data.x, data.u])
    pinned(q, xu.tolist(), 4)
    pinned(q, (5.0 * xu[:100]).tolist(), 4)  # saturating inputs
    net = load_model(REPO / "config" / "models" / "quadrotor_2d_residual.npz").net
    rng = np.random.default_rng(11)
    rows = np.hstack([rng.normal(0, 0.5, (200, 6)), rng.uniform(0.03, 0.3, (200, 2))])
    out = pinned(net, rows.tolist(), 6)
    assert np.abs(out).max() > 0


def test_cached_layer_constants_follow_in_place_changes() -> None:
    """The bias in accumulator units and the multipliers are computed once, yet follow a trainer's
    in-place change of the integer tensors and the adapter's change of the scales."""
    data, q, _ = problem()
    x, u = data.x[:50], data.u[:50]
    calls: list[float] = []
    original = fixed_point.quantize_multiplier

    def counting(m: float) -> tuple[int, int]:
        calls.append(m)
        return original(m)

    before = q.forward_int(x, u)
    converted = [c.bias_acc for c in q._constants]  # type: ignore[union-attr]
    fixed_point.quantize_multiplier = counting  # type: ignore[assignment]
    try:
        for _ in range(3):
            np.testing.assert_array_equal(q.forward_int(x, u), before)
        assert calls == []  # the multipliers were computed at construction
        assert all(c.bias_acc is b for c, b in zip(q._constants, converted, strict=True))  # type: ignore[union-attr]
        b1, w2 = q.tensors()[1], q.tensors()[2]
        b1 += 40  # in place, as QzoFfTrainer perturbs
        w2[0, :] -= 9
        changed = q.forward_int(x, u)
        assert not np.array_equal(changed, before)
        np.testing.assert_array_equal(changed, int_reference.forward_net(q, x, u))
        assert calls == []  # a weight change needs no new multiplier
        q.b_scale[0] *= 1.5  # in place, as the adapter requantizes
        q.a_scale[1] *= 0.75
        np.testing.assert_array_equal(q.forward_int(x, u), int_reference.forward_net(q, x, u))
        assert len(calls) == 2  # the two layers whose scales changed (layer 1 out, layer 2 in)
        q.b_scale[0] /= 1.5
        q.a_scale[1] /= 0.75
        b1 -= 40
        w2[0, :] += 9
        np.testing.assert_array_equal(q.forward_int(x, u), before)
    finally:
        fixed_point.quantize_multiplier = original  # type: ignore[assignment]


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


@pytest.mark.parametrize(("train", "changed"), [("last_layer", {4, 5}), ("biases", {1, 3, 5}),
                                               ("first_layer", {0, 1}), ("first_last", {0, 1, 4, 5}),
                                               ("all", {0, 1, 2, 3, 4, 5})])
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
