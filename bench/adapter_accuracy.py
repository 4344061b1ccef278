"""Offline adaptation to a 30% mass mismatch on the 2D quadrotor: loss against forward passes.

    tools/run.sh python bench/adapter_accuracy.py [--steps 3000] [--out bench/results/adapter_accuracy.json]

Data: transitions of the 30% heavier quadrotor flying figure-8s and circles under LQR with
exploration noise (safe_ctrl_ros.learning.pretrain.collect with the mass fixed), split into a
training and a validation set. Every method starts from the pretrained residual
(config/models/quadrotor_2d_residual.npz) and sees the same batches. Methods: QZO-FF (16w8a, with
each option as an ablation), float32 forward gradient (same estimator) and backpropagation (Adam).
Records: {method, options, forward_passes, final_val_loss, curve: [[forward_passes, val_loss], ...]}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros.learning.data import normalized_mse
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.pretrain import collect
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer

REPO = Path(__file__).resolve().parents[1]

QZO_VARIANTS: dict[str, dict[str, object]] = {
    "qzo_ff": {},
    "qzo_ff_m4": {"perturbations": 4},
    "qzo_ff_sign_m4": {"estimator": "sign", "perturbations": 4, "lr": 1e-5},
    "qzo_ff_momentum": {"momentum": 0.9, "lr": 1e-4},
    "qzo_ff_last_layer": {"train": "last_layer", "lr": 1e-2},
    "qzo_ff_biases": {"train": "biases", "lr": 1e-2},
    "qzo_ff_sparse50": {"sparsity": 0.5},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps of the forward-gradient methods")
    parser.add_argument("--bp-steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--variants", nargs="+", default=[*QZO_VARIANTS, "fg_fp32", "bp"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adapter_accuracy.json")
    args = parser.parse_args()
    start = load_model(REPO / "config" / "models" / "quadrotor_2d_residual.npz", 6, 2)
    data = collect("quadrotor_2d", args.episodes, 300, 0.02, (1.3, 1.3), seed=123)
    perm = np.random.default_rng(0).permutation(len(data))
    n_val = len(data) // 5
    val, train = data.take(perm[:n_val]), data.take(perm[n_val:])
    scale = start.loss_scale
    zero = normalized_mse(np.zeros_like(val.target), val.target, scale)
    pre = normalized_mse(start.net.forward_int(val.x, val.u), val.target, scale)
    print(f"{len(train)} training / {len(val)} validation transitions; validation loss: zero residual {zero:.4f}, "
          f"pretrained {pre:.4f}")
    records = []
    for name in args.variants:
        if name.startswith("qzo_ff"):
            opts = {"eps": 16, "lr": args.lr, **QZO_VARIANTS[name]}
            trainer: object = QzoFfTrainer(start.net.copy(), scale, ForwardGradientConfig(**opts))  # type: ignore[arg-type]
            steps = args.steps
            evaluate = trainer.loss  # type: ignore[attr-defined]
        elif name == "fg_fp32":
            opts = {"eps": 1e-3, "lr": args.lr}
            trainer = Fp32ForwardGradient(start.net.spec, start.net.theta(), scale, ForwardGradientConfig(**opts))  # type: ignore[arg-type]
            steps = args.steps
            evaluate = trainer.loss  # type: ignore[attr-defined]
        else:
            opts = {"lr": 1e-3, "optimizer": "adam"}
            trainer = Backprop(start.net.spec, start.net.theta(), scale, lr=1e-3)
            steps = args.bp_steps
            evaluate = trainer.loss
        rng = np.random.default_rng(1)
        curve = [[0, float(evaluate(val))]]
        for step in range(1, steps + 1):
            trainer.step(train.take(rng.integers(0, len(train), args.batch)))  # type: ignore[attr-defined]
            if step % max(1, steps // 20) == 0:
                curve.append([int(trainer.forward_passes), float(evaluate(val))])  # type: ignore[attr-defined]
        record = {"method": "qzo_ff" if name.startswith("qzo_ff") else name, "variant": name, "options": opts,
                  "forward_passes": int(trainer.forward_passes), "final_val_loss": curve[-1][1],  # type: ignore[attr-defined]
                  "curve": curve}
        records.append(record)
        print(f"{name:<20} forward passes {record['forward_passes']:>7}  final validation loss "
              f"{record['final_val_loss']:.4f}", flush=True)
    bp = next((r for r in records if r["method"] == "bp"), None)
    best_qzo = min((r for r in records if r["method"] == "qzo_ff"), key=lambda r: r["final_val_loss"], default=None)
    if bp and best_qzo:
        print(f"best QZO-FF ({best_qzo['variant']}) / backprop final loss: "
              f"{best_qzo['final_val_loss'] / bp['final_val_loss']:.2f}x")
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
