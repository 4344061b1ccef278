"""Closed loop on the MuJoCo quadrotor over seeds, in the core: the figure-8 with NMPC on the
nominal symbolic model, the residual adapted on board, the plant MuJoCo's 2D quadrotor with thrust
lag and drag on.

    tools/run.sh python bench/mujoco_closed_loop.py [--seeds 10] [--seconds 40] [--variants nominal qzo_ff bp]
        [--thrust-lag S] [--previous-input] [--disturbance-gain G] [--first-seed 0] [--adapter-param NAME=VALUE ...]
        [--out bench/results/mujoco_closed_loop.json] [--merge PART.json ...]

The loop, the variants, the seeds, the wind, the 30% heavier vehicle, the adapter in its own
process (the adapter node's default settings) and the figures are bench/adapter_closed_loop.py's
own (imported: `run`, `record`, `summaries`), with one change: the plant is `MujocoPlantSim` with
the default MuJoCo effects (thrust lag 0.015 s, drag 0.01 N s/m + 0.005 N s^2/m^2, ground contact;
1 ms RK4 physics steps) instead of the CasADi plant. The NMPC still predicts with the nominal
symbolic model plus the residual, so the residual has thrust lag and drag to learn on top of the
mass mismatch. Seed s drives the wind, the adapter's batches and its perturbations; every variant
of a seed flies the same wind, so the comparisons are paired per seed. `cut` = 1 - RMSE /
nominal's RMSE of the same seed, `added_violations` = violation steps - nominal's (constraints of
config/constraints/quadrotor_2d_flight.yaml), summarized over seeds (stats.summarize: mean, 95% CI,
worst seed). The hand-over points between loop and adapter are fixed, so a seed's figures repeat.
With --previous-input every variant (nominal included) runs the residual that also takes the
previous command u_{k-1} (config/models/quadrotor_2d_residual_prev_input.npz: the pretrained
residual extended by zero weights on u_{k-1}, so nominal's function is the pretrained one; the
NMPC's stage state carries u_{k-1}, the adapter's transitions too); --disturbance-gain G > 0 adds
the NMPC's offset-free disturbance estimate on x_dot, z_dot (NmpcConfig.disturbance_gain) to every
variant, with the adapter handed x_next - d (bench/adapter_closed_loop.py); --adapter-param sets
adapter node parameters (safe_ctrl_ros.learning.settings) over the defaults, recorded in the file.
(The sweep spec config/sweeps/quadrotor_2d_mujoco.yaml runs launch/quadrotor_2d_mujoco.launch.xml
through the ROS graph instead: `safe-ctrl-sweep config/sweeps/quadrotor_2d_mujoco.yaml`.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import adapter_closed_loop as acl  # bench/ is on sys.path when run as a script
import numpy as np
import yaml
from _results import write_records

from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.learning.adapter import AdapterConfig
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.settings import adapter_settings
from safe_ctrl_ros.simulation.mujoco import MujocoPlantSim, MujocoSettings
from safe_ctrl_ros.systems.base import SymbolicModel

REPO = Path(__file__).resolve().parents[1]
SETTINGS = MujocoSettings()
VARIANTS = ("nominal", "qzo_ff", "bp")
PREV_INPUT_MODEL = REPO / "config" / "models" / "quadrotor_2d_residual_prev_input.npz"


def mujoco_plant(model: SymbolicModel, dt: float, substeps: int) -> MujocoPlantSim:
    """What the imported loop calls as `PlantSim(model, dt, substeps)`: the MuJoCo plant (substeps unused)."""
    del substeps
    return MujocoPlantSim(model, dt, SETTINGS)


def adapter_config(overrides: dict[str, Any], variant: str, lr: float, bp_lr: float, seed: int) -> AdapterConfig:
    """acl.adapter_config with adapter node parameters set over the defaults."""
    cfg = replace(adapter_settings({"method": variant, **overrides}).config)
    cfg.trainer = replace(cfg.trainer, lr=lr, seed=seed)
    cfg.bp_lr, cfg.seed = bp_lr, seed
    return cfg


def figures(records: list[dict[str, Any]], variants: list[str], seeds: list[int]) -> dict[str, Any]:
    """summaries, paired, cut (acl.summaries) and added_violations of the records, printed."""
    result = acl.summaries(records, variants, seeds)
    by = {(r["variant"], r["seed"]): r for r in records}
    result["added_violations"] = {}
    for v in variants:
        if v != "nominal" and "nominal" in variants:
            added = [float(by[v, s]["violation_steps"] - by["nominal", s]["violation_steps"]) for s in seeds]
            result["added_violations"][v] = {**stats.summarize(added), "per_seed": added}
    for v in variants:
        s = result["summaries"][v]["rmse_last_10s"]
        viol = result["summaries"][v]["violation_steps"]
        print(f"{v:<9} rmse last 10 s mean {s['mean']:.4f} [{s['ci95_low']:.4f}, {s['ci95_high']:.4f}] "
              f"worst {s['worst']:.4f}; violation steps mean {viol['mean']:.1f}, worst {viol['worst']:.0f}")
    for name, c in result["cut"].items():
        r = c["rmse_last_10s"]
        print(f"{name} cut against nominal: mean {r['mean']:.0%} [{r['ci95_low']:.0%}, {r['ci95_high']:.0%}], "
              f"worst seed {r['worst']:.0%} (goal 30%)")
    return result


SAME = ("rule", "seconds", "plant", "wind", "model", "adapter_params", "nmpc")


def merge(parts: list[Path], out: Path) -> int:
    """One result file from runs over disjoint seeds with the same settings (checked): the figures
    over all their records; solve times per part (pooled p99s need the raw times), provenance per part."""
    data = [json.loads(path.read_text()) for path in parts]
    for key in SAME:
        if any(d.get(key) != data[0].get(key) for d in data[1:]):
            raise SystemExit(f"--merge: the parts differ in '{key}'")
    seeds = sorted(s for d in data for s in d["seeds"])
    if len(set(seeds)) != len(seeds):
        raise SystemExit("--merge: the parts share seeds")
    records = sorted((r for d in data for r in d["records"]), key=lambda r: (r["seed"], VARIANTS.index(r["variant"])))
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    result = figures(records, variants, seeds)
    result["solve_times"] = {"note": "per part (each pooled over its seeds' solves); 2 shared cores",
                             "parts": [d["solve_times"] for d in data]}
    write_records(out, records, merged_from=[{"file": str(path), "seeds": d["seeds"], "provenance": d["provenance"]}
                                             for path, d in zip(parts, data, strict=True)],
                  seeds=seeds, **{key: data[0].get(key) for key in SAME}, **result)
    return 0


def main() -> int:
    global SETTINGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--thrust-lag", type=float, default=SETTINGS.thrust_lag, help="s; 0: off (a diagnostic)")
    parser.add_argument("--previous-input", action="store_true",
                        help=f"the residual also takes u_(k-1) ({PREV_INPUT_MODEL.relative_to(REPO)})")
    parser.add_argument("--model", type=Path, default=None,
                        help="the residual model file (default: the pretrained one; --previous-input: its extension)")
    parser.add_argument("--disturbance-gain", type=float, default=0.0, help="NMPC disturbance estimate (0: off)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--adapter-param", nargs="+", default=[], metavar="NAME=VALUE",
                        help="adapter node parameters over its defaults (YAML values), e.g. check.rollout_factor=0")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="PART",
                        help="write --out from result files of disjoint seeds with the same settings (no runs)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mujoco_closed_loop.json")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    SETTINGS = replace(SETTINGS, thrust_lag=args.thrust_lag)
    acl.PlantSim = mujoco_plant  # type: ignore[assignment,misc]  # the one change to the imported loop
    overrides: dict[str, Any] = {}
    for item in args.adapter_param:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--adapter-param takes NAME=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    if overrides:
        acl.adapter_config = partial(adapter_config, overrides)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    model: Path = args.model.resolve() if args.model else (PREV_INPUT_MODEL if args.previous_input else acl.MODEL)
    gain: float = args.disturbance_gain
    variants: list[str] = args.variants
    p = acl.PARAMETERS
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for seed in seeds:
        for variant in variants:
            one = acl.run(variant, seed, args.seconds, p["update_period"][0], p["steps_per_update"][0],
                          p["trainer.lr"][0], model, gain=gain)
            one["variant"] = variant  # the labels stay the variants' (the gain is at the top level)
            runs[variant, seed] = [one]
        line = "  ".join(f"{v} {runs[v, seed][0]['rmse_last_10s']:.4f} ({runs[v, seed][0]['versions']} versions, "
                         f"{runs[v, seed][0]['violation_steps']} violation steps)" for v in variants)
        print(f"seed {seed}: rmse last 10 s  {line}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    records = [acl.record(runs[v, s]) for s in seeds for v in variants]
    result = figures(records, variants, seeds)
    result["solve_times"] = {"note": "pooled over every seed's solves (first excluded); 2 shared cores, see "
                                     "provenance.machine.load_average"}
    for v in variants:
        ms = np.concatenate([runs[v, s][0]["solve_ms"] for s in seeds])
        result["solve_times"][v] = {"solves": int(ms.size), "p50_ms": float(np.percentile(ms, 50)),
                                    "p99_ms": float(np.percentile(ms, 99))}
        t = result["solve_times"][v]
        print(f"{v:<9} solve p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms")
    write_records(
        args.out, records,
        rule=__doc__.split("\n\n", 2)[2].strip(),
        seeds=seeds, seconds=args.seconds,
        plant={"engine": "mujoco", "system": "quadrotor_2d", "mass_scale": acl.MASS_SCALE, "dt": acl.DT,
               "mujoco": {**SETTINGS.__dict__}},
        wind=acl.WIND,
        model={"file": str(model.relative_to(REPO)), "previous_input": bool(load_model(model).net.spec.previous_input),
               "loss_scale": load_model(model).loss_scale.tolist()},
        adapter_params=overrides,
        nmpc={"disturbance_gain": gain, "disturbance_states": "x_dot, z_dot (the velocity states)" if gain else None},
        **result,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
