"""Offline adaptation to a 30% mass mismatch on the 2D quadrotor: loss against forward passes.

    tools/run.sh python bench/adapter_accuracy.py [--seeds 10] [--first-seed 0] [--passes 100000] [--quick]
        [--out bench/results/adapter_accuracy.json]
    tools/run.sh python bench/adapter_accuracy.py --merge PART.json [PART.json ...] [--out ...]
    tools/run.sh python bench/adapter_accuracy.py --ablation [--passes N] [--seeds 10]
        [--reference bench/results/adapter_accuracy.json] [--out bench/results/adapter_ablation.json]

--ablation runs QZO-FF's options (ABLATION_VARIANTS: issue #18's enhancements, each changing one
option of the default) on the same seeds' data, and takes the references (quantization-aware and
float backprop, the fp32 forward gradient) per seed from --reference, after checking that each
seed's data are the same (the zero and pretrained validation losses to 1e-12 relative): the
references are not re-run. Every variant is paired per seed against the default (`paired.<variant>
_over_qzo_ff`) and against quantization-aware backprop (`paired.<variant>_over_bp_qat`).

--merge writes one result file from files run with the same settings on other seeds (e.g. seed
ranges in parallel processes, --first-seed/--seeds): the summaries are recomputed over all seeds,
and `merged_from` keeps each part's provenance.

Data: transitions of the 30% heavier quadrotor flying figure-8s and circles under LQR with
exploration noise (safe_ctrl_ros.learning.pretrain.collect with the mass fixed), split into a
training and a validation set. Every method starts from the pretrained residual
(config/models/quadrotor_2d_residual.npz) and, within a seed, sees the same batches. Methods: QZO-FF
(16w8a, with each option as an ablation), float32 forward gradient (same estimator),
backpropagation (Adam, each learning rate of --bp-lrs; the reference is the one with the lowest
mean final loss over the seeds, the others in bp_lr_sweep) and bp_qat, backpropagation through the
16w8a forward pass (activations rounded to int8 at the model's scales, straight-through gradient;
quantization-aware training: backprop's own best in the integer format, against which QZO-FF's
format costs nothing). Every forward-gradient variant gets the same budget of forward passes
(--passes; m perturbations per step cost 2m).

Seeds: seed s derives (numpy SeedSequence) four seeds, one per component: the data (its
trajectories and exploration noise: collect's own generator), the training/validation split, the
batch order (one generator per method, restarted so that every method sees the same batches) and the
perturbations (ForwardGradientConfig.seed; backprop is deterministic given the batches, torch on one
thread). Records, one per (seed, method run): {seed, method, variant, options, forward_passes,
final_val_loss, curve: [[forward_passes, val_loss], ...], seconds}; the float methods also record
final_val_loss_16w8a, the loss of their final weights quantized to 16w8a (what the adapter would
publish; QZO-FF's final_val_loss is already the integer model's). Top level: the settings, `data`
(per seed: sizes, the derived seeds, the zero and pretrained validation losses), `summaries` (per
variant: stats.summarize over seeds, with the median and how many seeds ended above the start),
`bp_lr` and `bp_lr_sweep`, and `paired` (per-seed ratios, stats.paired: QZO-FF against each
baseline, and backprop's 16w8a and quantization-aware losses against its float loss).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script
from _sources import fingerprint
from _sources import record as sources_record

from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.learning.adapter import _requantize
from safe_ctrl_ros.learning.data import normalized_mse
from safe_ctrl_ros.learning.model_file import ResidualModel, load_model
from safe_ctrl_ros.learning.pretrain import collect
from safe_ctrl_ros.learning.settings import PARAMETERS
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer

REPO = Path(__file__).resolve().parents[1]
# The code and files the figures depend on (recorded with a digest; a change during the run is listed).
SOURCES = ("bench/adapter_accuracy.py", "safe_ctrl_ros/learning/*.py", "safe_ctrl_ros/control/*.py",
           "safe_ctrl_ros/systems/*.py", "safe_ctrl_ros/simulation/*.py", "safe_ctrl_ros/tasks/*.py",
           "safe_ctrl_ros/env.py", "config/models/*.npz")
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
EPS = float(PARAMETERS["trainer.eps"][0])  # the adapter's defaults
LR = float(PARAMETERS["trainer.lr"][0])
MASS_SCALE = 1.3
STEPS_PER_EPISODE = 300
DT = 0.02

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
# Issue #18's enhancements (trainers.py's module docstring), each one option of the default; the
# step size where the option changes its units or its noise: the best of lr x 1/3, 1, 3 on one seed
# (100, not one of the ablation's) at 20 000 passes (`lr_screen` of the result file).
ABLATION_VARIANTS: dict[str, dict[str, object]] = {
    "qzo_ff": {},
    "qzo_ff_m4": {"perturbations": 4, "lr": 3 * LR},
    "qzo_ff_momentum": {"momentum": 0.9, "lr": LR / 10},
    "qzo_ff_guided": {"guidance": 0.5, "lr": LR},
    "qzo_ff_gaussian": {"distribution": "gaussian"},
    "qzo_ff_kernel": {"normalize": "kernel"},
    "qzo_ff_tensor_adam": {"normalize": "tensor", "lr": 1e-3},
    "qzo_ff_sparse50": {"sparsity": 0.5},
    "qzo_ff_sparse50_large": {"sparsity": 0.5, "sparse_by": "large"},
    "qzo_ff_sparse50_small": {"sparsity": 0.5, "sparse_by": "small"},
    # sharpness-aware perturbation at three neighbourhood radii (integer units; eps is 64); the step
    # size from the screen (adapter_ablation_screen_sharpness.json): lr at rho 16, lr / 3 at 64, 128
    "qzo_ff_sharpness16": {"sharpness": 16},
    "qzo_ff_sharpness64": {"sharpness": 64, "lr": LR / 3},
    "qzo_ff_sharpness128": {"sharpness": 128, "lr": LR / 3},
    # a subset of the weights: fewer dimensions, less estimator variance per pass (the adaptation to
    # the mass lives in how thrust and pitch enter the network: the first layer)
    "qzo_ff_first_layer": {"train": "first_layer"},
    "qzo_ff_first_last": {"train": "first_last"},
}
FLOAT_EPS = 1e-3
# A run stops when its validation loss passes this many times its start (or is not finite): it
# has diverged, and an overflowing integer model only costs time. The rest of its curve repeats the
# loss it stopped at, and the record says where (`stopped_at`).
DIVERGED = 100.0


def component_seeds(seed: int) -> dict[str, int]:
    """The seeds of the data, the split, the batch order and the perturbations, from one seed."""
    data, split, batches, perturbations = (int(v) for v in np.random.SeedSequence(seed).generate_state(4))
    return {"data": data, "split": split, "batches": batches, "perturbations": perturbations}


def jobs_for(variants: list[str], bp_lrs: list[float], qat_lr: float,
             table: dict[str, dict[str, object]] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The runs of `variants`; a QZO-FF variant's options from `table` (default QZO_VARIANTS)."""
    table = QZO_VARIANTS if table is None else table
    jobs: list[tuple[str, dict[str, Any]]] = []
    for name in variants:
        if name == "bp":
            jobs += [("bp", {"lr": lr, "optimizer": "adam"}) for lr in bp_lrs]
        elif name == "bp_qat":
            jobs.append((name, {"lr": qat_lr, "optimizer": "adam", "activations": "int8 (straight-through)"}))
        elif name == "fg_fp32":
            jobs.append((name, {"eps": FLOAT_EPS, "lr": LR}))
        elif name in table:
            jobs.append((name, {"eps": EPS, "lr": LR, **table[name]}))
        else:
            known = [*table, "fg_fp32", "bp", "bp_qat"]
            raise SystemExit(f"unknown variant '{name}'; known: {known}")
    return jobs


def run_seed(seed: int, start: ResidualModel, jobs: list[tuple[str, dict[str, Any]]], args: argparse.Namespace,
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every job on seed `seed`'s data: (the data's description, one record per job)."""
    seeds = component_seeds(seed)
    data = collect("quadrotor_2d", args.episodes, STEPS_PER_EPISODE, DT, (MASS_SCALE, MASS_SCALE), seed=seeds["data"])
    perm = np.random.default_rng(seeds["split"]).permutation(len(data))
    n_val = len(data) // 5
    val, train = data.take(perm[:n_val]), data.take(perm[n_val:])
    scale = start.loss_scale
    zero = normalized_mse(np.zeros_like(val.target), val.target, scale)
    pre = normalized_mse(start.net.forward_int(val.x, val.u), val.target, scale)
    info = {"seed": seed, "seeds": seeds, "train": len(train), "val": len(val), "zero_val_loss": zero,
            "pretrained_val_loss": pre}
    print(f"seed {seed}: {len(train)} training / {len(val)} validation transitions; validation loss: zero residual "
          f"{zero:.4f}, pretrained {pre:.4f}", flush=True)

    def quantized(theta: np.ndarray) -> float:
        return normalized_mse(_requantize(start.net, theta).forward_int(val.x, val.u), val.target, scale)

    records = []
    for name, opts in jobs:
        trainer: QzoFfTrainer | Fp32ForwardGradient | Backprop
        if name.startswith("qzo_ff"):
            cfg = ForwardGradientConfig(**opts, seed=seeds["perturbations"])  # type: ignore[arg-type]
            trainer = QzoFfTrainer(start.net.copy(), scale, cfg)
            steps = args.steps or args.passes // (2 * trainer.cfg.perturbations)
        elif name == "fg_fp32":
            cfg = ForwardGradientConfig(**opts, seed=seeds["perturbations"])  # type: ignore[arg-type]
            trainer = Fp32ForwardGradient(start.net.spec, start.net.theta(), scale, cfg)
            steps = args.steps or args.passes // (2 * trainer.cfg.perturbations)
        else:
            trainer = Backprop(start.net.spec, start.net.theta(), scale, lr=float(opts["lr"]), seed=seed, threads=1,
                               activation_scales=start.net.a_scale if name == "bp_qat" else None)
            steps = args.bp_steps
        rng = np.random.default_rng(seeds["batches"])  # the same batches for every method
        curve = [[0, float(trainer.loss(val))]]
        t0 = time.perf_counter()
        every = max(1, steps // 20)
        stopped_at = None
        for step in range(1, steps + 1):
            trainer.step(train.take(rng.integers(0, len(train), args.batch)))
            if step % every == 0:
                curve.append([int(trainer.forward_passes), float(trainer.loss(val))])
                if not curve[-1][1] <= DIVERGED * curve[0][1]:
                    stopped_at = int(trainer.forward_passes)
                    per_step = trainer.forward_passes // step
                    curve += [[int(k * every * per_step), curve[-1][1]] for k in range(step // every + 1,
                                                                                       steps // every + 1)]
                    break
        record: dict[str, Any] = {
            "seed": seed, "method": "qzo_ff" if name.startswith("qzo_ff") else name,
            "variant": name, "options": opts, "forward_passes": int(trainer.forward_passes),
            "final_val_loss": curve[-1][1], "curve": curve,
            "seconds": round(time.perf_counter() - t0, 1), "stopped_at": stopped_at,
        }
        if not isinstance(trainer, QzoFfTrainer):
            record["final_val_loss_16w8a"] = quantized(np.asarray(trainer.theta, dtype=np.float64))
        records.append(record)
        extra = f"  16w8a {record['final_val_loss_16w8a']:.6f}" if "final_val_loss_16w8a" in record else ""
        label = f"bp lr {opts['lr']:g}" if name == "bp" else name
        print(f"  {label:<20} forward passes {record['forward_passes']:>7}  final validation loss "
              f"{record['final_val_loss']:.6f}{extra}  ({record['seconds']} s)", flush=True)
    return info, records


def summary(values: list[float], start_losses: list[float] | None = None) -> dict[str, Any]:
    """stats.summarize of per-seed losses with their median, plus how many seeds ended above their
    start (diverged); a seed whose loss is not finite is counted and left out of the statistics."""
    finite = [v for v in values if np.isfinite(v)]
    out: dict[str, Any] = {**stats.summarize(finite), "median": float(np.median(finite))} if finite else {"n": 0}
    out["non_finite"] = len(values) - len(finite)
    if start_losses is not None:
        out["above_start"] = sum(not v < s for v, s in zip(values, start_losses, strict=True))
    return out


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """stats.paired of the per-seed ratios a / b, with their median, their geometric mean and its 95%
    CI (Student t on the log ratios: a seed that diverged moves it by its log, not its size), and the
    ratios themselves."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    out: dict[str, Any] = {**stats.paired(a, b), "median": float(np.median(ratios)), "per_seed": ratios}
    if len(ratios) > 1 and all(np.isfinite(r) and r > 0 for r in ratios):
        logs = stats.summarize(np.log(ratios).tolist())
        out.update(geomean=float(np.exp(logs["mean"])), geo_ci95_low=float(np.exp(logs["ci95_low"])),
                   geo_ci95_high=float(np.exp(logs["ci95_high"])))
    return out


def ablation_pairs(keyed: dict[str, Any], values: Any, qzo: list[float] | None, start: list[float],
                   seeds: list[int]) -> dict[str, Any]:
    """Every QZO-FF variant but the default against the default and against quantization-aware
    backprop, per seed; and against the default on the seeds where neither diverged."""
    out: dict[str, Any] = {}
    for key in keyed:
        if not key.startswith("qzo_ff") or key == "qzo_ff":
            continue
        mine = values(key)
        if qzo is not None:
            out[f"{key}_over_qzo_ff"] = paired(mine, qzo)
            # Where neither diverged (ended below its start): what the option does to a run that the
            # default's step size does not blow up.
            both = [i for i, (a, b) in enumerate(zip(mine, qzo, strict=True)) if a < start[i] and b < start[i]]
            if len(both) > 1:
                entry = paired([mine[i] for i in both], [qzo[i] for i in both])
                out[f"{key}_over_qzo_ff_converged"] = {**entry, "seeds": [seeds[i] for i in both]}
        if "bp_qat" in keyed:
            out[f"{key}_over_bp_qat"] = paired(mine, values("bp_qat"))
    return out


REACH_FACTORS = {"x1p25": 1.25, "x1p5": 1.5}  # issue #18's goals: 1.25x QAT backprop (mean), 1.5x (worst)


def reach(curves: list[list[list[float]]], references: list[float]) -> dict[str, Any]:
    """Per factor f of REACH_FACTORS: the forward passes at which each seed's curve first comes within
    f x that seed's reference loss (None: not within the budget), to the curve's resolution (its
    points); how many seeds got there; the median over the seeds (None when half or more did not)."""
    out: dict[str, Any] = {}
    for name, factor in REACH_FACTORS.items():
        per_seed = [next((int(p) for p, v in curve if v <= factor * ref), None)
                    for curve, ref in zip(curves, references, strict=True)]
        reached = sorted(p for p in per_seed if p is not None)
        median = float(np.median([*reached, *[np.inf] * (len(per_seed) - len(reached))])) if per_seed else np.inf
        out[name] = {"factor": factor, "per_seed": per_seed, "reached": len(reached), "seeds": len(per_seed),
                     "median": median if np.isfinite(median) else None,
                     "worst": max(reached) if len(reached) == len(per_seed) and reached else None,
                     "resolution": int(curves[0][1][0] - curves[0][0][0]) if curves and len(curves[0]) > 1 else None}
    return out


def summarize_all(records: list[dict[str, Any]], data: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """`summaries`, `bp_lr`, `bp_lr_sweep` and `paired` of the result file, from the per-seed records."""
    start = [d["pretrained_val_loss"] for d in data]
    keyed: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        key = f"bp@{r['options']['lr']:g}" if r["variant"] == "bp" else r["variant"]
        keyed.setdefault(key, {})[r["seed"]] = r

    def values(key: str, figure: str = "final_val_loss") -> list[float]:
        return [float("nan") if keyed[key][s][figure] is None else keyed[key][s][figure] for s in seeds]

    out: dict[str, Any] = {"summaries": {}, "paired": {}}
    sweep = []
    for key in keyed:
        if key.startswith("bp@"):
            lr = keyed[key][seeds[0]]["options"]["lr"]
            sweep.append({"lr": lr, "final_val_loss": summary(values(key), start),
                          "final_val_loss_16w8a": summary(values(key, "final_val_loss_16w8a"), start)})
    if sweep:
        best = min(sweep, key=lambda e: e["final_val_loss"]["mean"])
        out["bp_lr"] = best["lr"]
        out["bp_lr_sweep"] = sweep
        keyed["bp"] = keyed.pop(f"bp@{best['lr']:g}")
    for key in keyed:
        if key.startswith("bp@"):
            continue
        first = keyed[key][seeds[0]]
        entry: dict[str, Any] = {"options": first["options"], "forward_passes": first["forward_passes"],
                                 "final_val_loss": summary(values(key), start)}
        if "final_val_loss_16w8a" in first:
            entry["final_val_loss_16w8a"] = summary(values(key, "final_val_loss_16w8a"), start)
        curves = np.array([keyed[key][s]["curve"] for s in seeds], dtype=float)
        # How much the second half of the budget still gave: final loss / loss at half the passes,
        # per seed (1: flat, a plateau at this step size).
        half = int(np.searchsorted(curves[0, :, 0], curves[0, -1, 0] / 2))
        entry["second_half_ratio"] = summary((curves[:, -1, 1] / curves[:, half, 1]).tolist())
        entry["curve_mean"] = [[int(p), float(v)] for p, v in zip(curves[0, :, 0], curves[:, :, 1].mean(axis=0),
                                                                    strict=True)]
        out["summaries"][key] = entry
    out["summaries"]["pretrained"] = {"final_val_loss": summary(start)}
    qzo = values("qzo_ff") if "qzo_ff" in keyed else None
    baselines = [("bp", "final_val_loss"), ("bp", "final_val_loss_16w8a"), ("bp_qat", "final_val_loss"),
                 ("fg_fp32", "final_val_loss"), ("fg_fp32", "final_val_loss_16w8a")]
    if qzo is not None and all(np.isfinite(qzo)):
        for key, figure in baselines:
            if key in keyed:
                name = f"qzo_ff_over_{key}" + ("_16w8a" if figure.endswith("16w8a") else "")
                other = values(key, figure)
                out["paired"][name] = paired(qzo, other)
        out["paired"]["qzo_ff_over_pretrained"] = paired(qzo, start)
    out["paired"].update(ablation_pairs(keyed, values, qzo, start, seeds))
    if "bp_qat" in keyed:
        out["reach"] = {key: reach([keyed[key][s]["curve"] for s in seeds], values("bp_qat"))
                        for key in keyed if key.startswith("qzo_ff")}
    # The 16w8a format's floor: what rounding backprop's weights, or training through the integer
    # forward pass, costs against backprop in float.
    if "bp" in keyed:
        bp = values("bp")
        out["paired"]["bp_16w8a_over_bp"] = paired(values("bp", "final_val_loss_16w8a"), bp)
        if "bp_qat" in keyed:
            out["paired"]["bp_qat_over_bp"] = paired(values("bp_qat"), bp)
    return out


SEED_DRIVES = {"data": "collect's generator (trajectories, exploration noise)", "split": "the validation split",
               "batches": "the batch order (the same for every method of a seed)",
               "perturbations": "ForwardGradientConfig.seed", "derived_by": "numpy SeedSequence(seed)"}


def report(out: Path, records: list[dict[str, Any]], data: list[dict[str, Any]], seeds: list[int],
           settings: dict[str, Any], **top: Any) -> None:
    """Print the summaries of `records` and write the result file."""
    result = summarize_all(records, data, seeds)
    for key, entry in result["summaries"].items():
        s = entry["final_val_loss"]
        if s["n"]:
            print(f"{key:<20} final validation loss mean {s['mean']:.6f} [{s['ci95_low']:.6f}, {s['ci95_high']:.6f}] "
                  f"worst {s['worst']:.6f} (above start: {s.get('above_start', '-')}, non-finite: {s['non_finite']})")
    for name, p in result["paired"].items():
        print(f"{name}: mean {p['mean']:.2f}x [{p['ci95_low']:.2f}, {p['ci95_high']:.2f}], median {p['median']:.2f}x, "
              f"worst seed {p['worst']:.2f}x, best {p['best']:.2f}x")
    if "qzo_ff_over_bp" in result["paired"]:
        print("goal: QZO-FF within 1.25x of backprop (mean and worst seed)")
    write_records(out, records, **top, seeds=seeds, seed_drives=SEED_DRIVES, settings=settings, data=data, **result)


def merge(out: Path, parts: list[Path]) -> int:
    """One result file from result files of the same settings and different seeds (seeds run in
    parallel processes): records and data concatenated by seed, the summaries over all of them."""
    loaded = [json.loads(p.read_text()) for p in parts]
    settings = loaded[0]["settings"]
    for path, part in zip(parts, loaded, strict=True):
        if part["settings"] != settings:
            raise SystemExit(f"{path}: other settings than {parts[0]}")
    seeds = sorted(s for part in loaded for s in part["seeds"])
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"the parts share seeds: {seeds}")
    records = sorted((r for part in loaded for r in part["records"]), key=lambda r: r["seed"])  # stable: job order
    data = sorted((d for part in loaded for d in part["data"]), key=lambda d: d["seed"])
    merged_from = [{"file": str(p), "seeds": part["seeds"], "provenance": part["provenance"],
                    "sources": part["sources"]} for p, part in zip(parts, loaded, strict=True)]
    kept = {k: loaded[0][k] for k in ("references_from", "lr_screen") if k in loaded[0]}  # an ablation's
    report(out, records, data, seeds, settings, merged_from=merged_from, **kept)
    return 0


REFERENCES = ("bp", "bp_qat", "fg_fp32")
SCREEN_FACTORS = (1 / 3, 1.0, 3.0)
SCREEN_FILE = REPO / "bench" / "results" / "adapter_ablation_screen.json"


def ablation(args: argparse.Namespace) -> int:
    """--ablation: every ABLATION_VARIANTS option on the seeds, the references from --reference;
    --screen: each variant at SCREEN_FACTORS x its lr on one seed (the seed is not one of the
    ablation's), written to SCREEN_FILE unless --out names another file."""
    sources = fingerprint(*SOURCES)
    start = load_model(args.model, 6, 2)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = jobs_for(args.only or list(ABLATION_VARIANTS), [], args.qat_lr, ABLATION_VARIANTS)
    if args.screen:
        seeds = seeds[:1]
        jobs = [(f"{name}@x{factor:.3g}", {**opts, "lr": float(opts["lr"]) * factor})  # type: ignore[arg-type]
                for name, opts in jobs for factor in SCREEN_FACTORS]
    refs: dict[int, list[dict[str, Any]]] = {}
    ref_data: dict[int, dict[str, Any]] = {}
    if not args.screen:
        reference = json.loads(args.reference.read_text())
        same = {k: reference["settings"][k] for k in ("episodes", "steps_per_episode", "dt", "mass_scale", "batch",
                                                      "val_fraction", "model_sha256")}
        mine = {"episodes": args.episodes, "steps_per_episode": STEPS_PER_EPISODE, "dt": DT, "mass_scale": MASS_SCALE,
                "batch": args.batch, "val_fraction": 0.2,
                "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest()[:16]}
        if same != mine:
            raise SystemExit(f"{args.reference}: other data settings ({same}) than this run ({mine})")
        for r in reference["records"]:
            if r["variant"] in REFERENCES and r["seed"] in seeds:
                refs.setdefault(r["seed"], []).append({**r, "from": args.reference.name})
        ref_data = {d["seed"]: d for d in reference["data"]}
        missing = [s for s in seeds if s not in ref_data]
        if missing:
            raise SystemExit(f"{args.reference} has no references for seeds {missing}")
    data, records = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        info, recs = run_seed(seed, start, jobs, args)
        if seed in ref_data:
            for figure in ("zero_val_loss", "pretrained_val_loss"):  # the same data as the references'
                if not np.isclose(info[figure], ref_data[seed][figure], rtol=1e-12, atol=0):
                    raise SystemExit(f"seed {seed}: {figure} {info[figure]} differs from {args.reference}'s "
                                     f"{ref_data[seed][figure]}: not the same data")
        info["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"seed {seed} took {info['seconds']} s", flush=True)
        data.append(info)
        records += recs + refs.get(seed, [])
    settings = {"passes": args.passes, "steps": args.steps, "batch": args.batch, "episodes": args.episodes,
                "steps_per_episode": STEPS_PER_EPISODE, "dt": DT, "mass_scale": MASS_SCALE, "val_fraction": 0.2,
                "qzo_defaults": {"eps": EPS, "lr": LR}, "variants": {name: opts for name, opts in jobs},
                "diverged_stop": DIVERGED, "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest()[:16]}
    top: dict[str, Any] = {"sources": sources_record(sources, *SOURCES)}
    if args.screen:
        out = args.out if args.out != REPO / "bench" / "results" / "adapter_accuracy.json" else SCREEN_FILE
        top["screen_factors"] = list(SCREEN_FACTORS)
        write_records(out, records, **top, seeds=seeds, settings=settings, data=data)
        return 0
    out = args.out if args.out != REPO / "bench" / "results" / "adapter_accuracy.json" else (
        REPO / "bench" / "results" / "adapter_ablation.json")
    top["references_from"] = {"file": str(args.reference.relative_to(REPO)) if args.reference.is_relative_to(REPO)
                              else str(args.reference), "variants": list(REFERENCES),
                              "provenance": reference["provenance"]}
    screens = sorted(SCREEN_FILE.parent.glob(SCREEN_FILE.stem + "*.json"))
    if screens:
        top["lr_screen"] = {"files": [p.name for p in screens], "passes": [], "seeds": [], "final_val_loss": {}}
        for path in screens:
            screen = json.loads(path.read_text())
            top["lr_screen"]["passes"].append(screen["settings"]["passes"])
            top["lr_screen"]["seeds"].append(screen["seeds"])
            top["lr_screen"]["final_val_loss"].update({f"{r['variant'].split('@')[0]}@lr{r['options']['lr']:g}":
                                                       r["final_val_loss"] for r in screen["records"]})
    report(out, records, data, seeds, settings, **top)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=100_000, help="forward passes of each forward-gradient variant")
    parser.add_argument("--steps", type=int, default=None, help="overrides --passes: steps per variant")
    parser.add_argument("--bp-steps", type=int, default=10_000, help="backprop steps (its loss has flattened by then)")
    parser.add_argument("--bp-lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--variants", nargs="+", default=[*QZO_VARIANTS, "fg_fp32", "bp", "bp_qat"])
    parser.add_argument("--qat-lr", type=float, default=3e-3, help="Adam lr of quantization-aware backprop")
    parser.add_argument("--model", type=Path, default=MODEL, help="the pretrained residual")
    parser.add_argument("--quick", action="store_true",
                        help="a CI-sized run: 2 seeds, 2 000 passes, 200 backprop steps, 2 episodes")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="PART",
                        help="write one result file from these result files (other seeds, same settings); run nothing")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adapter_accuracy.json")
    parser.add_argument("--ablation", action="store_true",
                        help="QZO-FF's options (ABLATION_VARIANTS), the references taken per seed from --reference")
    parser.add_argument("--reference", type=Path, default=REPO / "bench" / "results" / "adapter_accuracy.json")
    parser.add_argument("--only", nargs="+", default=None, help="--ablation / --screen: only these variants")
    parser.add_argument("--screen", action="store_true",
                        help="the ablation's step sizes: each variant at its lr x 1/3, 1, 3 on one seed (--first-seed)")
    args = parser.parse_args()
    if args.merge:
        return merge(args.out, args.merge)
    if args.ablation or args.screen:
        return ablation(args)
    sources = fingerprint(*SOURCES)
    if args.quick:
        args.seeds, args.passes, args.bp_steps = min(args.seeds, 2), min(args.passes, 2000), min(args.bp_steps, 200)
        args.episodes = min(args.episodes, 2)
    start = load_model(args.model, 6, 2)
    jobs = jobs_for(args.variants, args.bp_lrs, args.qat_lr)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    data, records = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        info, recs = run_seed(seed, start, jobs, args)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"seed {seed} took {info['seconds']} s", flush=True)
        data.append(info)
        records += recs
    settings = {"passes": args.passes, "steps": args.steps, "bp_steps": args.bp_steps, "bp_lrs": args.bp_lrs,
                "qat_lr": args.qat_lr, "batch": args.batch, "episodes": args.episodes,
                "steps_per_episode": STEPS_PER_EPISODE, "dt": DT, "mass_scale": MASS_SCALE,
                "val_fraction": 0.2, "qzo_defaults": {"eps": EPS, "lr": LR}, "fg_fp32_eps": FLOAT_EPS,
                "bp_threads": 1, "variants": args.variants,
                "model": str(args.model.relative_to(REPO)) if args.model.is_relative_to(REPO) else str(args.model),
                "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest()[:16], "model_meta": start.meta}
    report(args.out, records, data, seeds, settings, sources=sources_record(sources, *SOURCES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
