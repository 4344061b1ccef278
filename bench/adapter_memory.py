"""Training memory beyond inference: QZO-FF vs float32 forward gradient vs backpropagation.

    tools/run.sh python bench/adapter_memory.py [--out bench/results/adapter_memory.json]

For MLPs of 2 to 16 layers, widths and batch sizes, one training step's peak memory minus one
inference's peak memory, measured:
- qzo_ff, fg_fp32 (numpy): with tracemalloc, peak during `step(batch)` minus peak during a forward
  pass of the same batch (both from the same baseline);
- bp (torch autograd, Adam): the bytes autograd saves for the backward pass (saved-tensor hooks),
  plus the gradients and Adam's two moment buffers (torch's CPU allocator is not seen by
  tracemalloc, so these are counted from the tensors themselves).
Records: {method, depth, width, batch, extra_bytes}; a plot goes to bench/results/adapter_memory.png.
"""

from __future__ import annotations

import argparse
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros.control import ResidualSpec
from safe_ctrl_ros.learning.data import Batch
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer

REPO = Path(__file__).resolve().parents[1]
NX, NU = 6, 2


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def measure(method: str, depth: int, width: int, batch_size: int) -> int:
    spec = ResidualSpec(NX, NU, hidden=(width,) * (depth - 1), activation="relu")
    rng = np.random.default_rng(0)
    theta = rng.normal(0.0, 1.0 / np.sqrt(width), spec.num_params)  # well-scaled at any depth
    data = Batch(
        rng.normal(size=(batch_size, NX)), rng.normal(size=(batch_size, NU)), rng.normal(size=(batch_size, NX))
    )
    scale = np.ones(NX)
    if method == "qzo_ff":
        net = QuantizedMLP.from_float(spec, spec.unpack(theta), np.hstack([data.x, data.u]))
        tr = QzoFfTrainer(net, scale, ForwardGradientConfig(eps=16, lr=1e-12))
        tr.step(data)  # warm up (first-call allocations)
        return max(0, _peak(lambda: tr.step(data)) - _peak(lambda: net.forward_int(data.x, data.u)))
    if method == "fg_fp32":
        fg = Fp32ForwardGradient(spec, theta, scale, ForwardGradientConfig(eps=1e-3, lr=1e-12))
        fg.step(data)
        return max(0, _peak(lambda: fg.step(data)) - _peak(lambda: spec.evaluate(data.x, data.u, fg.theta)))
    import torch

    bp = Backprop(spec, theta, scale, lr=1e-12)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    bp.opt.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = bp._loss(data)
    loss.backward()  # type: ignore[attr-defined]
    bp.opt.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in bp.params if p.grad is not None)
    adam = sum(v.numel() * v.element_size() for s in bp.opt.state.values() for v in s.values() if torch.is_tensor(v)
               and v.dim() > 0)
    return int(sum(saved) + grads + adam)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adapter_memory.json")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    records = []
    print(f"{'method':<9}{'depth':>6}{'width':>6}{'batch':>6}{'extra bytes':>14}")
    for width in args.widths:
        for batch in args.batches:
            for depth in args.depths:
                for method in ("qzo_ff", "fg_fp32", "bp"):
                    extra = measure(method, depth, width, batch)
                    records.append({"method": method, "depth": depth, "width": width, "batch": batch,
                                    "extra_bytes": extra})
                    print(f"{method:<9}{depth:>6}{width:>6}{batch:>6}{extra:>14}", flush=True)
    for width in args.widths:
        for batch in args.batches:
            ratios = []
            for depth in args.depths:
                q = next(r["extra_bytes"] for r in records if (r["method"], r["depth"], r["width"], r["batch"]) ==
                         ("qzo_ff", depth, width, batch))
                b = next(r["extra_bytes"] for r in records if (r["method"], r["depth"], r["width"], r["batch"]) ==
                         ("bp", depth, width, batch))
                ratios.append(f"{depth}: {b / max(q, 1):.1f}x")
            print(f"width {width}, batch {batch}: backprop / QZO-FF extra memory by depth  " + ", ".join(ratios))
    write_records(args.out, records)
    if not args.no_plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
            return 0
        fig, axes = plt.subplots(1, len(args.widths), figsize=(5 * len(args.widths), 4), squeeze=False)
        for ax, width in zip(axes[0], args.widths, strict=True):
            batch = max(args.batches)
            for method in ("qzo_ff", "fg_fp32", "bp"):
                pts = [(r["depth"], r["extra_bytes"]) for r in records
                       if r["method"] == method and r["width"] == width and r["batch"] == batch]
                ax.plot([p[0] for p in pts], [p[1] / 1024 for p in pts], marker="o", label=method)
            ax.set_xlabel("layers")
            ax.set_ylabel("extra memory of a training step (KiB)")
            ax.set_yscale("log")
            ax.set_title(f"width {width}, batch {batch}")
            ax.legend()
        fig.tight_layout()
        png = args.out.with_suffix(".png")
        fig.savefig(png, dpi=100)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
