"""Offline adaptation to a 30% mass mismatch on the 2D quadrotor: loss against forward passes.

    tools/run.sh python bench/adapter_accuracy.py [--passes 100000] [--out bench/results/adapter_accuracy.json]

Data: transitions of the 30% heavier quadrotor flying figure-8s and circles under LQR with
exploration noise (safe_ctrl_ros.learning.pretrain.collect with the mass fixed), split into a
training and a validation set. Every method starts from the pretrained residual
(config/models/quadrotor_2d_residual.npz) and sees the same batches. Methods: QZO-FF (16w8a, with
each option as an ablation), float32 forward gradient (same estimator), backpropagation (Adam,
each learning rate of --bp-lrs; the record is the best one, the others in lr_sweep) and bp_qat,
backpropagation through the 16w8a forward pass (activations rounded to int8 at the model's scales,
straight-through gradient; quantization-aware training: backprop's own best in the integer
format, against which QZO-FF's format costs nothing). Every
forward-gradient variant gets the same budget of forward passes (--passes; m perturbations per
step cost 2m). Records: {method, variant, options, forward_passes, final_val_loss, curve:
[[forward_passes, val_loss], ...]}; the float methods also record final_val_loss_16w8a, the loss of
their final weights quantized to 16w8a (what the adapter would publish; QZO-FF's final_val_loss is
already the integer model's).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros.learning.adapter import _requantize
from safe_ctrl_ros.learning.data import normalized_mse
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.pretrain import collect
from safe_ctrl_ros.learning.settings import PARAMETERS
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
EPS = float(PARAMETERS["trainer.eps"][0])  # the adapter's defaults
LR = float(PARAMETERS["trainer.lr"][0])

# The ablations: each changes one option of the default (the step size where the option needs its own).
QZO_VARIANTS: dict[str, dict[str, object]] = {
    "qzo_ff": {},
    "qzo_ff_m4": {"perturbations": 4},
    "qzo_ff_sign_m4": {"estimator": "sign", "perturbations": 4, "lr": 1e-5},
    "qzo_ff_momentum": {"momentum": 0.9, "lr": LR / 10},
    "qzo_ff_last_layer": {"train": "last_layer"},
    "qzo_ff_biases": {"train": "biases"},
    "qzo_ff_sparse50": {"sparsity": 0.5},
    "qzo_ff_eps16": {"eps": 16},  # the former default perturbation
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=100_000, help="forward passes of each forward-gradient variant")
    parser.add_argument("--steps", type=int, default=None, help="overrides --passes: steps per variant")
    parser.add_argument("--bp-steps", type=int, default=10_000, help="backprop steps (its loss has flattened by then)")
    parser.add_argument("--bp-lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--variants", nargs="+", default=[*QZO_VARIANTS, "fg_fp32", "bp", "bp_qat"])
    parser.add_argument("--qat-lr", type=float, default=3e-3, help="Adam lr of quantization-aware backprop")
    parser.add_argument("--model", type=Path, default=MODEL, help="the pretrained residual")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adapter_accuracy.json")
    args = parser.parse_args()
    start = load_model(args.model, 6, 2)
    data = collect("quadrotor_2d", args.episodes, 300, 0.02, (1.3, 1.3), seed=123)
    perm = np.random.default_rng(0).permutation(len(data))
    n_val = len(data) // 5
    val, train = data.take(perm[:n_val]), data.take(perm[n_val:])
    scale = start.loss_scale
    zero = normalized_mse(np.zeros_like(val.target), val.target, scale)
    pre = normalized_mse(start.net.forward_int(val.x, val.u), val.target, scale)
    print(f"{len(train)} training / {len(val)} validation transitions; validation loss: zero residual {zero:.4f}, "
          f"pretrained {pre:.4f}")

    def quantized(theta: np.ndarray) -> float:
        return normalized_mse(_requantize(start.net, theta).forward_int(val.x, val.u), val.target, scale)

    jobs: list[tuple[str, dict[str, object]]] = []
    for name in args.variants:
        if name == "bp":
            jobs += [("bp", {"lr": lr, "optimizer": "adam"}) for lr in args.bp_lrs]
        elif name == "bp_qat":
            jobs.append((name, {"lr": args.qat_lr, "optimizer": "adam", "activations": "int8 (straight-through)"}))
        elif name == "fg_fp32":
            jobs.append((name, {"eps": 1e-3, "lr": LR}))
        else:
            jobs.append((name, {"eps": EPS, "lr": LR, **QZO_VARIANTS[name]}))
    records = []
    for name, opts in jobs:
        trainer: QzoFfTrainer | Fp32ForwardGradient | Backprop
        if name.startswith("qzo_ff"):
            trainer = QzoFfTrainer(start.net.copy(), scale, ForwardGradientConfig(**opts))  # type: ignore[arg-type]
            steps = args.steps or args.passes // (2 * trainer.cfg.perturbations)
        elif name == "fg_fp32":
            trainer = Fp32ForwardGradient(start.net.spec, start.net.theta(), scale, ForwardGradientConfig(**opts))  # type: ignore[arg-type]
            steps = args.steps or args.passes // (2 * trainer.cfg.perturbations)
        else:
            trainer = Backprop(start.net.spec, start.net.theta(), scale, lr=float(opts["lr"]),  # type: ignore[arg-type]
                               activation_scales=start.net.a_scale if name == "bp_qat" else None)
            steps = args.bp_steps
        rng = np.random.default_rng(1)
        curve = [[0, float(trainer.loss(val))]]
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            trainer.step(train.take(rng.integers(0, len(train), args.batch)))
            if step % max(1, steps // 20) == 0:
                curve.append([int(trainer.forward_passes), float(trainer.loss(val))])
        record: dict[str, object] = {
            "method": "qzo_ff" if name.startswith("qzo_ff") else name,
            "variant": name, "options": opts, "forward_passes": int(trainer.forward_passes),
            "final_val_loss": curve[-1][1], "curve": curve,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if not isinstance(trainer, QzoFfTrainer):
            record["final_val_loss_16w8a"] = quantized(np.asarray(trainer.theta, dtype=np.float64))
        records.append(record)
        extra = f"  16w8a {record['final_val_loss_16w8a']:.6f}" if "final_val_loss_16w8a" in record else ""
        label = f"bp lr {opts['lr']:g}" if name == "bp" else name
        print(f"{label:<20} forward passes {record['forward_passes']:>7}  final validation loss "
              f"{record['final_val_loss']:.6f}{extra}  ({record['seconds']} s)", flush=True)
    # Backprop: one record, its best learning rate (by final validation loss), the others listed.
    bps = [r for r in records if r["method"] == "bp"]
    if bps:
        bp = min(bps, key=lambda r: r["final_val_loss"])  # type: ignore[arg-type, return-value]
        bp["lr_sweep"] = [{"lr": r["options"]["lr"], "final_val_loss": r["final_val_loss"],  # type: ignore[index]
                           "final_val_loss_16w8a": r["final_val_loss_16w8a"]} for r in bps]
        records = [r for r in records if r["method"] != "bp" or r is bp]
        bps = [bp]
    best_qzo = min((r for r in records if r["method"] == "qzo_ff"), key=lambda r: r["final_val_loss"], default=None)
    if bps and best_qzo:
        bp = min(bps, key=lambda r: r["final_val_loss"])
        print(f"best QZO-FF ({best_qzo['variant']}) {best_qzo['final_val_loss']:.6f} / best backprop "
              f"(lr {bp['options']['lr']:g}) {bp['final_val_loss']:.6f} = "  # type: ignore[index]
              f"{best_qzo['final_val_loss'] / bp['final_val_loss']:.2f}x "
              f"(goal <= 1.25x); backprop's weights in 16w8a: {bp['final_val_loss_16w8a']:.6f} "
              f"(QZO-FF / that = {best_qzo['final_val_loss'] / bp['final_val_loss_16w8a']:.2f}x)")
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
