"""Training memory beyond inference: QZO-FF vs float32 forward gradient vs backpropagation, measured.

    tools/run.sh python bench/adapter_memory.py [--out bench/results/adapter_memory.json]

For MLPs of 2 to 16 layers (6 states + 2 inputs in, 6 out; every hidden layer `width` wide: the
flagship's 8-32-32-6 residual is depth 3, width 32) and batch sizes, one rule for every method
(safe_ctrl_ros.learning.memory.RULE, docs/LEARNING.md): the peak bytes allocated during one training
step minus the peak bytes allocated during one inference of the same model on the same batch at real
width (int8 activations / int32 accumulators for the integer model, float32 for the float models),
the step's forward passes running that same inference; tracemalloc for numpy (qzo_ff, fg_fp32),
torch.profiler's CPU allocator events for torch (bp). Records {method, depth, width, batch,
extra_bytes}; `summaries` holds backprop / QZO-FF ratios and the flagship adapter's own figures (the
adapter's measurement on the pretrained model, as AdapterStatus.training_memory_bytes reports it).
A plot goes to bench/results/adapter_memory.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import ResidualSpec
from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter
from safe_ctrl_ros.learning.data import Batch
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.memory import RULE, TrainingMemory, training_memory
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer
from safe_ctrl_ros.systems.base import WRENCH_SIZE

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
NX, NU = 6, 2
METHODS = ("qzo_ff", "fg_fp32", "bp")
FLAGSHIP = {"depth": 3, "width": 32, "batch": 128}  # 8-32-32-6, the adapter's batch_size 128


def measure(method: str, depth: int, width: int, batch_size: int) -> TrainingMemory:
    spec = ResidualSpec(NX, NU, hidden=(width,) * (depth - 1), activation="relu")
    rng = np.random.default_rng(0)
    theta = rng.normal(0.0, 1.0 / np.sqrt(width), spec.num_params)  # well-scaled at any depth
    data = Batch(
        rng.normal(size=(batch_size, NX)), rng.normal(size=(batch_size, NU)), rng.normal(size=(batch_size, NX))
    )
    scale = np.ones(NX)
    if method == "qzo_ff":
        net = QuantizedMLP.from_float(spec, spec.unpack(theta), np.hstack([data.x, data.u]))
        return training_memory(QzoFfTrainer(net, scale, ForwardGradientConfig(eps=16, lr=1e-12)), data)
    if method == "fg_fp32":
        return training_memory(Fp32ForwardGradient(spec, theta, scale, ForwardGradientConfig(eps=1e-3, lr=1e-12)), data)
    return training_memory(Backprop(spec, theta, scale, lr=1e-12), data)


def flagship(method: str) -> int:
    """The adapter's own figure: OnlineAdapter on the pretrained 2D-quadrotor residual, batch 128,
    the flagship's trainer settings (eps 64, lr 0.01), after its first training step."""
    nominal = systems.make("quadrotor_2d")
    start = load_model(MODEL, nominal.nx, nominal.nu)
    cfg = AdapterConfig(method=method, batch_size=FLAGSHIP["batch"],  # type: ignore[arg-type]
                        trainer=ForwardGradientConfig(eps=64, lr=0.01) if method == "qzo_ff" else
                        ForwardGradientConfig(eps=1e-3, lr=0.01))
    adapter = OnlineAdapter(start, nominal, cfg)
    rng = np.random.default_rng(0)
    x, u = np.zeros(nominal.nx), np.zeros(nominal.nu)
    step = nominal.rk4_function(start.dt, 1)
    while not adapter.ready:
        xn = np.asarray(step(x, u, np.zeros(WRENCH_SIZE))).reshape(-1) + 1e-4 * rng.standard_normal(nominal.nx)
        adapter.add(x, u, xn)
    adapter.train(1)
    return adapter.extra_bytes()


def _extra(records: list[dict[str, int | str]], method: str, depth: int, width: int, batch: int) -> int:
    return int(next(r["extra_bytes"] for r in records
                    if (r["method"], r["depth"], r["width"], r["batch"]) == (method, depth, width, batch)))


def summaries(records: list[dict[str, int | str]], depths: list[int], widths: list[int],
              batches: list[int]) -> dict[str, object]:
    """backprop / QZO-FF by (width, batch, depth), QZO-FF's spread over depth, the flagship's figures."""
    out: dict[str, object] = {}
    ratios: list[dict[str, object]] = []
    spread: list[dict[str, object]] = []
    # From 3 layers on every model has a width x width tensor, the largest QZO-FF updates at a time
    # (2 layers have only width x 8 and 6 x width ones).
    deep = [d for d in depths if d >= 3] or depths
    for width in widths:
        for batch in batches:
            for depth in depths:
                q, b = _extra(records, "qzo_ff", depth, width, batch), _extra(records, "bp", depth, width, batch)
                ratios.append({"width": width, "batch": batch, "depth": depth, "bp_over_qzo_ff": b / max(q, 1)})
            qs = [_extra(records, "qzo_ff", d, width, batch) for d in deep]
            spread.append({"width": width, "batch": batch, "depths": f"{min(deep)}-{max(deep)}", "qzo_ff_min": min(qs),
                           "qzo_ff_max": max(qs), "qzo_ff_max_over_min": max(qs) / max(min(qs), 1)})
    out["bp_over_qzo_ff"] = ratios
    out["qzo_ff_over_depth"] = spread
    out["qzo_ff_max_over_min_worst"] = max(float(r["qzo_ff_max_over_min"]) for r in spread)  # type: ignore[arg-type]
    out["bp_over_qzo_ff_min"] = min(float(r["bp_over_qzo_ff"]) for r in ratios)  # type: ignore[arg-type]
    out["bp_over_qzo_ff_max"] = max(float(r["bp_over_qzo_ff"]) for r in ratios)  # type: ignore[arg-type]
    deepest = max(depths)
    out["bp_over_qzo_ff_min_at_deepest"] = min(
        float(r["bp_over_qzo_ff"]) for r in ratios if r["depth"] == deepest)  # type: ignore[arg-type]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=list(range(2, 17)))
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--no-flagship", action="store_true", help="skip the adapter's own figures")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adapter_memory.json")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    records: list[dict[str, int | str]] = []
    print(f"{'method':<9}{'depth':>6}{'width':>6}{'batch':>6}{'step peak':>12}{'inference':>12}{'extra bytes':>13}")
    for width in args.widths:
        for batch in args.batches:
            for depth in args.depths:
                for method in METHODS:
                    m = measure(method, depth, width, batch)
                    records.append({"method": method, "depth": depth, "width": width, "batch": batch,
                                    "extra_bytes": m.extra_bytes})
                    print(f"{method:<9}{depth:>6}{width:>6}{batch:>6}{m.step_peak:>12}{m.inference_peak:>12}"
                          f"{m.extra_bytes:>13}", flush=True)
    top = summaries(records, args.depths, args.widths, args.batches)
    for r in top["bp_over_qzo_ff"]:  # type: ignore[attr-defined]
        if r["depth"] in (min(args.depths), max(args.depths)):
            print(f"width {r['width']}, batch {r['batch']}, {r['depth']} layers: backprop / QZO-FF "
                  f"{r['bp_over_qzo_ff']:.1f}x")
    if not args.no_flagship:
        fl = {method: flagship(method) for method in METHODS}
        top["flagship"] = {**FLAGSHIP, "model": str(MODEL.relative_to(REPO)),
                           **{f"{k}_bytes": v for k, v in fl.items()},
                           "bp_over_qzo_ff": fl["bp"] / max(fl["qzo_ff"], 1)}
        # The goals issue #18 sets, judged on these figures.
        top["goals"] = {
            "flagship_bp_over_qzo_ff_at_least_2_8": fl["bp"] / max(fl["qzo_ff"], 1) >= 2.8,
            "bp_over_qzo_ff_at_deepest_at_least_10": float(top["bp_over_qzo_ff_min_at_deepest"]) >= 10,  # type: ignore[arg-type]
            "qzo_ff_flat_in_depth_within_5_percent": float(top["qzo_ff_max_over_min_worst"]) <= 1.05,  # type: ignore[arg-type]
        }
        print(f"flagship adapter (8-32-32-6, batch 128): {fl}, backprop / QZO-FF "
              f"{fl['bp'] / max(fl['qzo_ff'], 1):.2f}x")
    write_records(args.out, records, rule=RULE, summaries=top)
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
            for method in METHODS:
                pts = [(r["depth"], r["extra_bytes"]) for r in records
                       if r["method"] == method and r["width"] == width and r["batch"] == batch]
                ax.plot([p[0] for p in pts], [int(p[1]) / 1024 for p in pts], marker="o", label=method)
            ax.set_xlabel("layers")
            ax.set_ylabel("training step peak above inference peak (KiB)")
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
