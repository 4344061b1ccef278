"""Training memory beyond inference, measured: one rule and one kind of instrument for every method.

The rule (docs/LEARNING.md, "Memory of a training step beyond inference"):

    extra = peak bytes allocated during one training step
            - peak bytes allocated during one inference of the same model on the same batch

- Both peaks are allocator counts taken from the moment the call starts (what was allocated before,
  the parameters among it, is not counted; storage shared by two views is one allocation and is
  counted once). Never a formula.
- The inference keeps tensors at their real width: int16 weights, int8 activations and int32
  accumulators for the integer model (`int8_forward`), float32 for the float models
  (`float32_forward`; torch's own float32 forward pass for backprop).
- The training step's forward passes run that same inference (`training_memory` binds it on a copy
  of the trainer): the code's reference passes emulate the integer model with int64 arrays and the
  float32 forward gradient in float64, and those widths are the emulation's, not the method's.
- The step is a step in steady state: the second step of a copy of the trainer (the first builds
  what the libraries and the method allocate once: Adam's two moments). What the trainer keeps
  between steps and is not a parameter (Adam's moments, the fp32 forward gradient's perturbation
  mask, momentum buffers) exists during the whole step and is added as the bytes of those arrays
  (`held_bytes`). Backprop's gradients are not kept: zero_grad frees them at the start of a step
  and the backward pass allocates them again, inside the measured step.

Instruments: numpy -> tracemalloc (numpy reports its data allocations to it, with the Python heap);
torch on CPU -> torch.profiler's memory profile (every allocation and free of torch's CPU allocator,
in time order; the running sum's maximum is the peak). BLAS scratch is seen by neither.
"""

from __future__ import annotations

import copy
import gc
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.data import Batch, normalized_mse
from safe_ctrl_ros.learning.fixed_point import A_MAX, QuantizedMLP, quantize_multiplier
from safe_ctrl_ros.learning.trainers import Backprop, Fp32ForwardGradient, QzoFfTrainer
from safe_ctrl_ros.systems.base import FloatArray

TILE = 8  # rows x samples of one int32 matmul tile in int8_forward (the registers of an int8 kernel)
MAX_INPUTS = 512  # int16 x int8 products summed over at most this many inputs fit an int32 exactly

RULE = (
    "peak bytes allocated during one training step in steady state (a copy's second step; plus the "
    "non-parameter state kept between steps, e.g. Adam's moments) minus the peak bytes allocated during one "
    "inference of the same model on the same batch; the inference at real width (int16 weights, int8 "
    "activations, int32 accumulators for the integer model; float32 for the float models) and the step's "
    "forward passes running that same inference; parameters not counted, storage shared by views counted "
    "once; numpy measured with tracemalloc, torch with torch.profiler's CPU allocator events"
)

Trainer = QzoFfTrainer | Fp32ForwardGradient | Backprop


# --- instruments -----------------------------------------------------------------------------------
def numpy_peak(fn: Callable[[], object]) -> int:
    """Peak bytes tracemalloc sees allocated during `fn()` above what was allocated when it started."""
    if tracemalloc.is_tracing():
        raise RuntimeError("numpy_peak: tracemalloc is already tracing (one measurement at a time)")
    with _no_gc():
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            fn()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return int(peak - base)


@contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while measuring: one at a random moment moves the peak (it frees
    garbage earlier than it would be). Not a collection first either: a full collection empties
    Python's free lists, and the objects made after it are then allocated, and counted, anew."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def torch_peak(fn: Callable[[], object]) -> int:
    """Peak bytes torch's CPU allocator has allocated during `fn()` above what it had when it started.

    From torch.profiler's memory profile: every allocation and free of the CPU allocator, with its
    address, in time order; the peak of the running sum. Only the frees of blocks allocated inside
    this profile count (the profiler also reports frees of blocks allocated during an earlier
    profile, which would lower the sum by what it never added). Torch runs on one intra-op thread
    meanwhile, as the adapter runs backprop.
    """
    import torch
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _no_gc(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    finally:
        torch.set_num_threads(threads)
    events: list[tuple[int, int, int]] = []  # (time ns, address, bytes: + allocated, - freed)
    stack = list(prof.profiler.kineto_results.experimental_event_tree())  # type: ignore[union-attr]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size))
    live: dict[int, int] = {}
    running = peak = 0
    for _, ptr, nbytes in sorted(events):
        if nbytes > 0:
            live[ptr] = nbytes
            running += nbytes
        elif ptr in live:
            running -= live.pop(ptr)
        peak = max(peak, running)
    return peak


def held_bytes(arrays: list[Any]) -> int:
    """Bytes of the distinct storages behind `arrays` (numpy arrays or torch tensors; None skipped)."""
    seen: dict[int, int] = {}
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, np.ndarray):
            base = a
            while isinstance(base.base, np.ndarray):
                base = base.base
            seen[id(base)] = int(base.nbytes)
        else:  # a torch tensor
            storage = a.untyped_storage()
            seen[int(storage.data_ptr())] = int(storage.nbytes())
    return sum(seen.values())


# --- inference at real width -------------------------------------------------------------------------
def int8_forward(net: QuantizedMLP, x: ArrayLike, u: ArrayLike) -> FloatArray:
    """QuantizedMLP.forward_int with every tensor at its real width: bit for bit the same outputs.

    Activations are int8 arrays (input and output of the current layer), each layer's products are
    summed in int32 tiles of TILE outputs x TILE samples (int32 copies of a TILE-row slice of the
    int16 weights and a TILE-sample slice of the activations, then the requantization of the tile
    in int64, as an int8 kernel does in registers) and written as int8; the last layer's int32
    accumulators are dequantized on the host (float64, as forward_int returns).
    """
    x2, u2 = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(u, dtype=np.float64))
    spec, n, nx = net.spec, x2.shape[0], x2.shape[1]
    if max(i for _, i in spec.shapes) > MAX_INPUTS:
        raise ConfigError(f"int8_forward: a layer has more than {MAX_INPUTS} inputs (the int32 sums could overflow)")
    a = np.empty((nx + u2.shape[1], n), dtype=np.int8)
    for k in range(a.shape[0]):  # the input quantized one feature at a time (as forward_int rounds it)
        col = (x2[:, k] if k < nx else u2[:, k - nx]) * spec.in_gain[k]
        col /= net.a_scale[0]
        np.round(col, out=col)
        a[k] = np.clip(col, -A_MAX, A_MAX, out=col)
    last = len(net.w) - 1
    acc_out = np.empty((0, n), dtype=np.int32)
    for idx, (w, b) in enumerate(zip(net.w, net.b, strict=True)):
        acc_scale = net.w_scale[idx] * net.a_scale[idx]
        b_acc = np.round(b.astype(np.float64) * net.b_scale[idx] / acc_scale).astype(np.int64)
        rows = w.shape[0]
        if idx == last:
            acc_out = np.empty((rows, n), dtype=np.int32)
        else:
            m0, shift = quantize_multiplier(acc_scale / net.a_scale[idx + 1])
            out = np.empty((rows, n), dtype=np.int8)
        for r0 in range(0, rows, TILE):
            w_t = w[r0 : r0 + TILE].astype(np.int32)
            for c0 in range(0, n, TILE):
                tile = (w_t @ a[:, c0 : c0 + TILE].astype(np.int32)).astype(np.int64)
                tile += b_acc[r0 : r0 + TILE, None]
                np.clip(tile, -(2**31), 2**31 - 1, out=tile)  # an int32 accumulator saturates
                if idx == last:
                    acc_out[r0 : r0 + TILE, c0 : c0 + TILE] = tile
                    continue
                tile = (tile * m0 + (1 << (shift - 1))) >> shift if shift > 0 else tile * m0 << (-shift)
                out[r0 : r0 + TILE, c0 : c0 + TILE] = np.clip(tile, 0, A_MAX)  # ReLU, saturate to int8
        if idx != last:
            a = out
    result: FloatArray = acc_out.astype(np.float64)  # in place from here: the same rounding as forward_int
    result *= net.w_scale[last] * net.a_scale[last]
    for j in range(result.shape[0]):  # by rows: numpy copies the array for an in-place broadcast
        result[j] *= spec.out_gain[j]
    return result.T


def float32_forward(spec: ResidualSpec, theta: NDArray[np.float32], x: ArrayLike, u: ArrayLike) -> NDArray[np.float32]:
    """The residual MLP in float32 (weights, activations and output), in place where it can be."""
    if theta.dtype != np.float32 or theta.size != spec.num_params:
        raise ConfigError(f"float32_forward: theta must be {spec.num_params} float32 weights")
    x2, u2 = np.atleast_2d(np.asarray(x)), np.atleast_2d(np.asarray(u))
    n, nx = x2.shape[0], x2.shape[1]
    h = np.empty((nx + u2.shape[1], n), dtype=np.float32)
    for k in range(h.shape[0]):
        h[k] = (x2[:, k] if k < nx else u2[:, k - nx]) * spec.in_gain[k]
    pos = 0
    for idx, (o, i) in enumerate(spec.shapes):
        w = theta[pos : pos + o * i].reshape(o, i)  # views of theta: no copy
        pos += o * i
        b = theta[pos : pos + o]
        pos += o
        h = w @ h
        for j in range(o):  # by rows: numpy copies the array for an in-place broadcast
            h[j] += b[j]
        if idx < len(spec.shapes) - 1:
            if spec.activation == "relu":
                np.maximum(h, 0.0, out=h)
            else:
                np.tanh(h, out=h)
    for j in range(h.shape[0]):
        h[j] *= np.float32(spec.out_gain[j])
    return h.T


# --- the measurement ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingMemory:
    step_peak: int  # bytes: the step's peak plus the state kept between steps
    inference_peak: int  # bytes: one inference at real width
    instrument: str  # "tracemalloc" | "torch.profiler"

    @property
    def extra_bytes(self) -> int:
        return max(0, self.step_peak - self.inference_peak)


def _real_width(trainer: Trainer) -> Trainer:
    """A copy of `trainer` whose forward passes are the real-width inference (the memory rule)."""
    import sys

    memo: dict[int, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        memo[id(torch)] = torch  # a module is shared, not copied
    twin: Trainer = copy.deepcopy(trainer, memo)
    if isinstance(twin, QzoFfTrainer):
        twin.model.forward_int = partial(int8_forward, twin.model)  # type: ignore[method-assign]
    elif isinstance(twin, Fp32ForwardGradient):
        fg = twin

        def loss32(batch: Batch, theta: FloatArray | None = None) -> float:
            w = fg.theta if theta is None else np.asarray(theta, dtype=np.float32)
            pred = cast(FloatArray, float32_forward(fg.spec, w, batch.x, batch.u))  # float32: no copy
            return normalized_mse(pred, batch.target, fg.scale)

        fg.loss = loss32  # type: ignore[method-assign]
    return twin


def inference(trainer: Trainer, batch: Batch) -> Callable[[], object]:
    """One inference of `trainer`'s model on `batch`, at real width."""
    if isinstance(trainer, QzoFfTrainer):
        return partial(int8_forward, trainer.model, batch.x, batch.u)
    if isinstance(trainer, Fp32ForwardGradient):
        return partial(float32_forward, trainer.spec, trainer.theta, batch.x, batch.u)
    bp = trainer

    def forward() -> object:
        with bp.torch.no_grad():
            return bp._forward(batch)

    return forward


def kept_state(trainer: Trainer) -> list[Any]:
    """The arrays a trainer keeps between steps that are not its parameters."""
    if isinstance(trainer, QzoFfTrainer):  # momentum, the guiding estimate, the magnitude masks
        return [*(trainer.velocity or []), *(trainer.guide or []), *(m for m in trainer.masks if m is not None)]
    if isinstance(trainer, Fp32ForwardGradient):
        return [trainer.mask, trainer.velocity]
    # Gradients are not kept: the step's zero_grad frees them and its backward pass allocates them
    # again (inside the measured step). Adam's moments are kept (allocated by the first step).
    return [v for s in trainer.opt.state.values() for v in s.values() if trainer.torch.is_tensor(v)]


def training_memory(trainer: Trainer, batch: Batch) -> TrainingMemory:
    """Measure `trainer`'s training memory beyond inference on `batch` by the rule above.

    The trainer itself is not stepped (a copy is), so its numerics are untouched; the figure is the
    same whether or not the trainer has stepped before.
    """
    peak = torch_peak if isinstance(trainer, Backprop) else numpy_peak
    twin = _real_width(trainer)
    twin.step(batch)  # what is allocated once: first-call allocations of the libraries, Adam's moments
    step = peak(lambda: twin.step(batch)) + held_bytes(kept_state(twin))
    infer = peak(inference(twin, batch))
    return TrainingMemory(step, infer, "torch.profiler" if isinstance(trainer, Backprop) else "tracemalloc")
