"""The training-memory instrument (safe_ctrl_ros.learning.memory): exact on known allocations, the
real-width inferences equal the reference passes, and the measured relations between the methods."""

from __future__ import annotations

import numpy as np
import pytest

from safe_ctrl_ros.control import ResidualSpec
from safe_ctrl_ros.learning.data import Batch
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.memory import (
    TrainingMemory,
    float32_forward,
    held_bytes,
    int8_forward,
    numpy_peak,
    torch_peak,
    training_memory,
)
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer

NX, NU = 6, 2


def _setup(depth: int, width: int, batch: int, seed: int = 0) -> tuple[ResidualSpec, np.ndarray, Batch]:
    spec = ResidualSpec(NX, NU, hidden=(width,) * (depth - 1), activation="relu")
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 1.0 / np.sqrt(width), spec.num_params)
    data = Batch(rng.normal(size=(batch, NX)), rng.normal(size=(batch, NU)), rng.normal(size=(batch, NX)))
    return spec, theta, data


def _qzo(depth: int, width: int, batch: int) -> TrainingMemory:
    spec, theta, data = _setup(depth, width, batch)
    net = QuantizedMLP.from_float(spec, spec.unpack(theta), np.hstack([data.x, data.u]))
    return training_memory(QzoFfTrainer(net, np.ones(NX), ForwardGradientConfig(eps=16, lr=1e-12)), data)


def _bp(depth: int, width: int, batch: int) -> TrainingMemory:
    spec, theta, data = _setup(depth, width, batch)
    return training_memory(Backprop(spec, theta, np.ones(NX), lr=1e-12), data)


# --- the instruments on allocations of known size ----------------------------------------------------
def test_numpy_instrument_counts_known_buffers_exactly() -> None:
    def step() -> tuple[np.ndarray, np.ndarray]:
        a = np.empty(3000, np.uint8)
        del a  # freed before the peak: not in it
        b = np.empty(5000, np.uint8)
        c = np.empty(250, np.float32)  # 1000 B, alive with b: the peak is 6000 B of data
        return b, c

    def inference() -> tuple[np.ndarray, np.ndarray]:
        return np.empty(500, np.uint8), np.empty(125, np.float32)  # 1000 B, as many array objects

    step(), inference()  # first-call allocations of the interpreter
    assert numpy_peak(step) - numpy_peak(inference) == 5000
    kept = np.zeros(4000, np.uint8)
    assert numpy_peak(lambda: kept.fill(7)) <= 64  # what exists before the call is not counted (4000 B)


def test_torch_instrument_counts_known_buffers_exactly() -> None:
    torch = pytest.importorskip("torch")

    def step() -> None:
        a = torch.empty(4000, dtype=torch.uint8)
        b = torch.empty(1000, dtype=torch.float32)  # 8000 B alive together
        del a, b
        c = torch.empty(100, dtype=torch.float64)  # 800 B later: below the peak
        del c

    def inference() -> None:
        torch.empty(2000, dtype=torch.int8)

    assert torch_peak(step) == 8000
    assert torch_peak(inference) == 2000
    w = torch.zeros(1000)
    assert torch_peak(lambda: w.view(10, 100)) == 0  # a view of existing storage allocates nothing
    assert torch_peak(lambda: w.add_(1.0)) <= 16  # nor does an in-place op (the 4000 B exist before)


def test_torch_instrument_ignores_frees_of_blocks_from_an_earlier_profile() -> None:
    torch = pytest.importorskip("torch")
    kept: list[object] = []
    torch_peak(lambda: kept.append(torch.empty(5000, dtype=torch.uint8)))  # allocated while profiling

    def step() -> None:
        kept.clear()  # frees the 5000 B of the earlier profile: not this step's
        torch.empty(3000, dtype=torch.uint8)

    assert torch_peak(step) == 3000


def test_held_bytes_counts_shared_storage_once() -> None:
    torch = pytest.importorskip("torch")
    a = np.zeros(1000, np.float32)
    assert held_bytes([a, a[10:], a.reshape(10, 100), None]) == 4000
    t = torch.zeros(500, dtype=torch.float64)
    assert held_bytes([t, t[100:], t.view(5, 100), np.zeros(3, np.int8)]) == 4003


# --- the real-width inferences -----------------------------------------------------------------------
@pytest.mark.parametrize(("depth", "width", "batch"), [(2, 8, 1), (3, 32, 128), (5, 20, 37), (4, 128, 9)])
def test_int8_forward_is_forward_int_bit_for_bit(depth: int, width: int, batch: int) -> None:
    spec, theta, data = _setup(depth, width, batch, seed=depth)
    net = QuantizedMLP.from_float(spec, spec.unpack(theta), np.hstack([data.x, data.u]))
    x, u = 3.0 * data.x, data.u  # beyond the calibrated range: the input saturates too
    np.testing.assert_array_equal(int8_forward(net, x, u), net.forward_int(x, u))


def test_float32_forward_matches_the_float64_reference() -> None:
    spec, theta, data = _setup(4, 32, 50)
    out = float32_forward(spec, theta.astype(np.float32), data.x, data.u)
    assert out.dtype == np.float32
    ref = spec.evaluate(data.x, data.u, theta.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_int8_inference_allocates_a_fraction_of_the_int64_emulation() -> None:
    spec, theta, data = _setup(4, 128, 256)
    net = QuantizedMLP.from_float(spec, spec.unpack(theta), np.hstack([data.x, data.u]))
    int8_forward(net, data.x, data.u)
    real = numpy_peak(lambda: int8_forward(net, data.x, data.u))
    emulated = numpy_peak(lambda: net.forward_int(data.x, data.u))
    activation = 128 * 256  # one int8 hidden activation
    # Two int8 activations (a layer's input and output) and tiles: at most 2.5 of them in all.
    assert 2 * activation < real < 2.5 * activation
    assert emulated > 8 * real


# --- the rule applied to the trainers ----------------------------------------------------------------
def test_measuring_leaves_the_trainer_untouched() -> None:
    spec, theta, data = _setup(3, 16, 32)
    net = QuantizedMLP.from_float(spec, spec.unpack(theta), np.hstack([data.x, data.u]))
    trainer = QzoFfTrainer(net, np.ones(NX), ForwardGradientConfig(eps=16, lr=1e-3))
    before = net.int_weights().copy()
    training_memory(trainer, data)
    assert trainer.steps == 0
    assert trainer.forward_passes == 0
    np.testing.assert_array_equal(net.int_weights(), before)
    assert "forward_int" not in vars(net)  # the real-width pass was bound on a copy only


def test_qzo_ff_extra_memory_is_flat_in_depth() -> None:
    flat = [_qzo(d, 32, 128).extra_bytes for d in (3, 6, 16)]  # (2 layers have no 32 x 32 tensor)
    assert min(flat) > 4000  # its perturbation and update buffers stand above the inference's peak
    assert max(flat) <= 1.05 * min(flat)  # within 5% from 3 to 16 layers


def test_backprop_extra_memory_grows_with_depth_and_exceeds_qzo_ff() -> None:
    bp = {d: _bp(d, 32, 128).extra_bytes for d in (4, 8, 16)}
    per_layer_low, per_layer_high = (bp[8] - bp[4]) / 4, (bp[16] - bp[8]) / 8
    # Each layer adds what autograd saves for it plus its gradient and Adam's moments: about the same.
    assert per_layer_low > 10_000
    assert per_layer_high == pytest.approx(per_layer_low, rel=0.2)
    q16 = _qzo(16, 32, 128).extra_bytes
    assert bp[16] > 10 * q16


def test_backprop_counts_gradients_and_adam_moments() -> None:
    spec, theta, data = _setup(3, 32, 8)
    m = training_memory(Backprop(spec, theta, np.ones(NX), lr=1e-3), data)
    params = 4 * spec.num_params  # float32
    # A step holds the gradients and Adam's two moments (3 x the weights) besides its activations.
    assert m.step_peak >= 3 * params
    assert m.instrument == "torch.profiler"


def test_backprop_figure_is_the_steady_state_one_whether_or_not_the_trainer_stepped() -> None:
    spec, theta, data = _setup(3, 32, 64)
    bp = Backprop(spec, theta, np.ones(NX), lr=1e-3)
    fresh = training_memory(bp, data)
    bp.step(data)
    bp.step(data)
    # Adam's moments exist through a steady-state step (kept state): the same bytes either way.
    assert training_memory(bp, data) == fresh
    moments = 2 * 4 * spec.num_params
    assert fresh.step_peak - fresh.inference_peak > moments


def test_fp32_forward_gradient_counts_its_kept_mask() -> None:
    spec, theta, data = _setup(3, 32, 32)
    plain = training_memory(Fp32ForwardGradient(spec, theta, np.ones(NX), ForwardGradientConfig(eps=1e-3)), data)
    momentum = training_memory(
        Fp32ForwardGradient(spec, theta, np.ones(NX), ForwardGradientConfig(eps=1e-3, momentum=0.9)), data
    )
    # The momentum buffer (float32 per weight) is kept between steps: counted in full.
    assert momentum.step_peak - plain.step_peak >= 4 * spec.num_params
    assert plain.step_peak >= spec.num_params  # the perturbation mask, one byte per weight
