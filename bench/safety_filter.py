"""Safety filters in the closed loop: violations, interventions, tracking and filter solve time.

    tools/run.sh python bench/safety_filter.py --scenario launch/cartpole_safety_filter.launch.xml
        [--disturbances FILE] [--seeds 10] [--filters none cbf mpsc] [--seconds S]
        [--out bench/results/safety_filter.json] [--append]

The loop of the launch file, run in the core for speed and repeatability: the plant (PlantSim with
the scenario's model parameters, RK4 substeps), the disturbances of the scenario file (any file:
observation, action, force and parameter targets, seeded per run), the controller of the params
file (LQR from `controller.lqr`, tracking the task) and the filter of the `safety_filter` section
(safe_ctrl_ros.safety.filters.settings.build_filter, as the node builds it). A launch file is
read for its `params`, `constraints` and `disturbances` argument defaults; a params file can be
given directly (then --constraints and --disturbances are needed). `--residual MODEL.npz` gives the
filter the learned residual (as the node receives it from the adapter) and sets its model_error to
the residual's measured one-step validation error on held-out transitions of the true plant
(measure_model_error: an unfiltered run with a seed no benchmark run uses), recorded at the top level,
with what MPSC is built around (`mpsc_design`: the model's steady input u_s next to the nominal one,
the one-step margin d and each row's tube at the horizon there, the terminal level) and how each
model's next state responds to the input range at the equilibrium (`input_response`: nominal,
nominal + residual, true plant). With `mpsc.offset_free` the MPSC's own margin `mpsc.model_error`
is measured on the same held-out transitions (measure_offset_error: how far its model's one-step
error moves from the last one within a horizon), recorded as `mpsc_model_error`.

Per (scenario, controller, filter, seed) a record: violation_steps (true states with a violated
constraint row), max_violation (largest g > 0, 0 if none), mean_intervention and max_intervention
(|u_safe - u_proposed|), rmse (position error to the reference), p50/p99/max_filter_ms (the
filter's own time per call, first call excluded), infeasible_steps (steps the filter reported it
could not certify), unreported_infeasible (steps whose certified command still led to a violation
while the filter reported none: what "no run infeasible without being reported" counts).
Summaries per filter over seeds (stats.summarize), and paired RMSE ratios filter / none over the
seeds whose unfiltered run did not violate.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros import systems
from safe_ctrl_ros.control.lqr import LqrController
from safe_ctrl_ros.disturbances import load_scenario
from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.safety import load_constraints
from safe_ctrl_ros.safety.filters.settings import build_filter
from safe_ctrl_ros.simulation import PlantSim
from safe_ctrl_ros.systems.base import SymbolicModel
from safe_ctrl_ros.tasks import make_task

REPO = Path(__file__).resolve().parents[1]
VALIDATION_SEED = 10_000
VALIDATION_FACTOR = 1.5


def _filter_settings(filt_p: dict[str, Any], filt: str, nominal: Any, residual_file: Path | None,
                     model_error: Any, mpsc_error: Any = None) -> tuple[dict[str, Any], Any, Any]:
    """The safety filter's settings from its params-file section (node-only keys left out), and the
    learned residual (spec, weights) it predicts with, with its measured error as the model margin
    (and the offset-free MPSC's measured error bound as its own, `mpsc.model_error`)."""
    node_only = ("system", "use_sim_time", "model_file", "constraints_file")
    settings = {k: v for k, v in filt_p.items() if k not in node_only}
    settings["filter"] = filt
    if filt == "mpsc" and mpsc_error is not None:
        settings["mpsc.model_error"] = mpsc_error.tolist()
    residual, theta = None, None
    if residual_file is not None:
        rm = load_model(residual_file, nominal.nx, nominal.nu)
        residual, theta = rm.net.spec, rm.net.theta()
        if model_error is not None:
            settings["model_error"] = model_error.tolist()
    return settings, residual, theta


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "task":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def launch_defaults(path: Path) -> dict[str, str]:
    """The default values of a launch file's <arg>s, $(find-pkg-share safe_ctrl_ros) = the repo."""
    text = path.read_text()
    out = {}
    for m in re.finditer(r'<arg\s+name="([^"]+)"\s+default="([^"]*)"', text):
        out[m.group(1)] = m.group(2).replace("$(find-pkg-share safe_ctrl_ros)", str(REPO))
    return out


def load_scenario_files(scenario: Path, constraints: Path | None, disturbances: Path | None
                        ) -> tuple[dict[str, dict[str, Any]], Path, Path]:
    if scenario.name.endswith(".launch.xml"):
        args = launch_defaults(scenario)
        params = Path(args["params"])
        constraints = constraints or Path(args["constraints"])
        disturbances = disturbances or Path(args["disturbances"])
    else:
        params = scenario
    if constraints is None or disturbances is None:
        raise SystemExit(f"{scenario}: give --constraints and --disturbances with a params file")
    data = yaml.safe_load(params.read_text())
    sections = {k.split("/")[-1]: v["ros__parameters"] for k, v in data.items()}
    return sections, constraints, disturbances


def measure_model_error(sections: dict[str, dict[str, Any]], constraints: Path, disturbances: Path,
                        residual_file: Path, seconds: float) -> np.ndarray:
    """Largest |x_true_next - (F(x, u) + g_theta(x, u))| per state entry over held-out transitions:
    those of an unfiltered run with seed VALIDATION_SEED (never one of the benchmark's seeds), the
    true plant's one-step map without the wrench (the disturbance bound covers that), times
    VALIDATION_FACTOR."""
    transitions: list[tuple[np.ndarray, np.ndarray]] = []
    run(sections, constraints, disturbances, "none", VALIDATION_SEED, seconds, None, None, transitions)
    plant_p = sections["plant"]
    nominal = systems.make(plant_p["system"])
    scn = load_scenario(disturbances, nominal.nx, nominal.nu, 0.02, list(nominal.params))
    true = systems.make(plant_p["system"], **scn.parameters(seconds, dict(nominal.params)))
    dt = float(plant_p.get("dt", 0.02))
    substeps = int(_flatten(dict(sections.get("safety_filter", {}))).get("substeps", 1))
    f_true = true.rk4_function(dt, int(plant_p.get("substeps", 10)))
    f_nom = nominal.rk4_function(dt, substeps)
    rm = load_model(residual_file, nominal.nx, nominal.nu)
    xs = np.array([x for x, _ in transitions])
    us = np.array([u for _, u in transitions])
    g = rm.net.spec.evaluate(xs, us, rm.net.theta())
    errs = np.zeros(nominal.nx)
    for i in range(len(transitions)):
        xt = np.asarray(f_true(xs[i], us[i], np.zeros(6))).reshape(-1)
        xn = np.asarray(f_nom(xs[i], us[i], np.zeros(6))).reshape(-1) + g[i]
        errs = np.maximum(errs, np.abs(xt - xn))
    out: np.ndarray = errs * VALIDATION_FACTOR
    return out


def _models(sections: dict[str, dict[str, Any]], disturbances: Path, seconds: float
            ) -> tuple[dict[str, Any], SymbolicModel, Any, Any]:
    """The filter's parameters, the nominal model, and the one-step maps of the true plant (the
    scenario's parameters at `seconds`, the plant's substeps) and of the nominal model (the filter's)."""
    plant_p = sections["plant"]
    filt_p = _flatten(dict(sections.get("safety_filter", {})))
    nominal = systems.make(plant_p["system"])
    scn = load_scenario(disturbances, nominal.nx, nominal.nu, 0.02, list(nominal.params))
    true = systems.make(plant_p["system"], **scn.parameters(seconds, dict(nominal.params)))
    dt = float(plant_p.get("dt", 0.02))
    f_true = true.rk4_function(dt, int(plant_p.get("substeps", 10)))
    f_nom = nominal.rk4_function(dt, int(filt_p.get("substeps", 1)))
    return filt_p, nominal, f_true, f_nom


def measure_offset_error(sections: dict[str, dict[str, Any]], constraints: Path, disturbances: Path,
                         residual_file: Path | None, seconds: float) -> np.ndarray:
    """For the offset-free MPSC (`mpsc.offset_free`): how far its model's one-step error moves from the
    last measured one over a horizon, max |e_{k+j} - e_{k-1}| per state entry over k and j = 0..N-1,
    e_k = x_true_next - (F(x_k, u_k) [+ g_theta(x_k, u_k) with mpsc.use_residual]) on the held-out
    transitions of measure_model_error (the true plant's map without the wrench: the filter covers the
    wrench's change by twice its bound), times VALIDATION_FACTOR."""
    transitions: list[tuple[np.ndarray, np.ndarray]] = []
    run(sections, constraints, disturbances, "none", VALIDATION_SEED, seconds, None, None, transitions)
    filt_p, nominal, f_true, f_nom = _models(sections, disturbances, seconds)
    xs = np.array([x for x, _ in transitions])
    us = np.array([u for _, u in transitions])
    g = np.zeros_like(xs)
    if residual_file is not None and filt_p.get("mpsc.use_residual", True):
        rm = load_model(residual_file, nominal.nx, nominal.nu)
        g = rm.net.spec.evaluate(xs, us, rm.net.theta())
    w0 = np.zeros(6)
    e = np.array([np.asarray(f_true(xs[i], us[i], w0)).reshape(-1) - np.asarray(f_nom(xs[i], us[i], w0)).reshape(-1)
                  - g[i] for i in range(len(xs))])
    horizon = int(filt_p.get("mpsc.horizon", 20))
    worst = np.zeros(nominal.nx)
    for j in range(horizon):
        worst = np.maximum(worst, np.abs(e[1 + j :] - e[: len(e) - 1 - j]).max(axis=0))
    out: np.ndarray = worst * VALIDATION_FACTOR
    return out


def input_response(sections: dict[str, dict[str, Any]], disturbances: Path, residual_file: Path,
                   seconds: float) -> dict[str, list[float]]:
    """How each model's next state moves between the lowest and the highest input at the nominal
    equilibrium state, x_next(x_eq, u_high) - x_next(x_eq, u_low) per state entry: the nominal model,
    the nominal model plus the residual, and the true plant (the scenario's parameters at the end)."""
    _, nominal, f_true, f_nom = _models(sections, disturbances, seconds)
    x_eq, _ = nominal.equilibrium()
    lo, hi = nominal.input_bounds
    w0 = np.zeros(6)
    rm = load_model(residual_file, nominal.nx, nominal.nu)

    def nom(u: np.ndarray) -> np.ndarray:
        return np.asarray(f_nom(x_eq, u, w0)).reshape(-1)

    def res(u: np.ndarray) -> np.ndarray:
        out: np.ndarray = nom(u) + np.asarray(rm.net.spec.evaluate(x_eq, u, rm.net.theta()))[0]
        return out

    def tru(u: np.ndarray) -> np.ndarray:
        return np.asarray(f_true(x_eq, u, w0)).reshape(-1)

    return {name: (f(hi) - f(lo)).tolist() for name, f in (("nominal", nom), ("residual", res), ("true", tru))}


def run(sections: dict[str, dict[str, Any]], constraints: Path, disturbances: Path, filt: str, seed: int,
        seconds: float, residual_file: Path | None, model_error: np.ndarray | None,
        transitions: list[tuple[np.ndarray, np.ndarray]] | None = None,
        calls: list[tuple[np.ndarray, np.ndarray, float]] | None = None,
        mpsc_error: np.ndarray | None = None) -> dict[str, Any]:
    plant_p, ctrl_p = sections["plant"], sections["controller"]
    filt_p = _flatten(dict(sections.get("safety_filter", {})))
    system = plant_p["system"]
    model_overrides = {k.removeprefix("model."): v for k, v in _flatten(plant_p).items() if k.startswith("model.")}
    nominal = systems.make(system)
    true = systems.make(system, **model_overrides)
    dt = float(plant_p.get("dt", 0.02))
    plant = PlantSim(true, dt, int(plant_p.get("substeps", 10)))
    scn = load_scenario(disturbances, nominal.nx, nominal.nu, dt, list(true.params), seed_override=seed)
    cons = load_constraints(constraints, nominal.nx, nominal.nu)
    task = make_task(nominal, ctrl_p.get("task", plant_p.get("task")))
    lqr = _flatten(ctrl_p)
    ctrl = LqrController(nominal, lqr["lqr.Q"], lqr["lqr.R"], dt)
    settings, residual, theta = _filter_settings(filt_p, filt, nominal, residual_file, model_error, mpsc_error)
    safety = build_filter(settings, nominal, cons, residual, task)
    if theta is not None and filt != "none":
        safety.set_residual_weights(theta)
    plant.reset(np.asarray(plant_p.get("initial_state", nominal.equilibrium()[0]), dtype=np.float64))
    pos = list(nominal.position_indices)
    steps = round(seconds / dt)
    violation_steps, worst, unreported, infeasible = 0, 0.0, 0, 0
    interventions, filter_ms, errors = [], [], []
    params_now = dict(true.params)
    for k in range(steps):
        t = k * dt
        wanted = scn.parameters(t, true.params)
        if wanted != params_now:
            plant.set_model(systems.make(system, **wanted))
            params_now = wanted
        y = scn.observation(t, plant.x.copy())
        x_ref, u_ref = task.reference(t)
        u_prop = ctrl(y, x_ref[0], u_ref[0])
        u_safe, rep = safety.filter(y, u_prop, t)
        if calls is not None:
            calls.append((y.copy(), np.asarray(u_prop, dtype=np.float64).copy(), t))
        interventions.append(rep.intervention)
        filter_ms.append(rep.solve_time_s * 1e3)
        infeasible += rep.infeasible
        plant.wrench = scn.force(t)
        if transitions is not None:
            transitions.append((plant.x.copy(), np.clip(scn.action(t, u_safe), *true.input_bounds)))
        x_next = plant.advance(scn.action(t, u_safe))
        ev = cons.evaluate(x_next, u_safe)
        if ev.any_violated:
            violation_steps += 1
            unreported += not rep.infeasible
        worst = max(worst, float(np.max(ev.values, initial=0.0)))
        errors.append(np.linalg.norm(x_next[pos] - task.reference(t + dt)[0][0][pos]))
    ms = np.array(filter_ms[1:])
    iv = np.array(interventions)
    err = np.array(errors)
    return {
        "scenario": None, "controller": ctrl_p.get("controller", "lqr"), "filter": filt, "seed": seed,
        "violation_steps": violation_steps, "max_violation": worst,
        "mean_intervention": float(iv.mean()), "max_intervention": float(iv.max()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "p50_filter_ms": float(np.percentile(ms, 50)), "p99_filter_ms": float(np.percentile(ms, 99)),
        "max_filter_ms": float(ms.max()), "infeasible_steps": infeasible, "unreported_infeasible": unreported,
        "steps": steps,
    }


def build_for(sections: dict[str, dict[str, Any]], constraints: Path, filt: str, residual_file: Path | None,
              model_error: np.ndarray | None, mpsc_error: np.ndarray | None = None) -> Any:
    """A fresh filter as `run` builds it."""
    plant_p, ctrl_p = sections["plant"], sections["controller"]
    nominal = systems.make(plant_p["system"])
    filt_p = _flatten(dict(sections.get("safety_filter", {})))
    settings, residual, theta = _filter_settings(filt_p, filt, nominal, residual_file, model_error, mpsc_error)
    cons = load_constraints(constraints, nominal.nx, nominal.nu)
    task = make_task(nominal, ctrl_p.get("task", plant_p.get("task")))
    safety = build_filter(settings, nominal, cons, residual, task)
    if theta is not None and filt != "none":
        safety.set_residual_weights(theta)
    return safety


def timing(sections: dict[str, dict[str, Any]], constraints: Path, filt: str, residual_file: Path | None,
           model_error: np.ndarray | None, calls: list[tuple[np.ndarray, np.ndarray, float]], repeats: int,
           mpsc_error: np.ndarray | None = None) -> dict[str, float]:
    """The filter's own cost per call without the machine's preemption: seed 0's calls replayed
    through `repeats` fresh filters (the same inputs give the same warm starts), per call the
    fastest of the repeats; p50/p99/max of those (first call excluded)."""
    best = np.full(len(calls), np.inf)
    for _ in range(repeats):
        safety = build_for(sections, constraints, filt, residual_file, model_error, mpsc_error)
        for i, (x, u, t) in enumerate(calls):
            _, rep = safety.filter(x, u, t)
            best[i] = min(best[i], rep.solve_time_s * 1e3)
    ms = best[1:]
    return {"repeats": repeats, "calls": int(ms.size), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def summaries(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scen in sorted({r["scenario"] for r in records}):
        rs = [r for r in records if r["scenario"] == scen]
        per: dict[str, Any] = {}
        base = {r["seed"]: r for r in rs if r["filter"] == "none"}
        for filt in sorted({r["filter"] for r in rs}):
            fr = sorted((r for r in rs if r["filter"] == filt), key=lambda r: r["seed"])
            s: dict[str, Any] = {key: stats.summarize([r[key] for r in fr]) for key in (
                "violation_steps", "max_violation", "mean_intervention", "max_intervention", "rmse",
                "p50_filter_ms", "p99_filter_ms", "max_filter_ms", "infeasible_steps")}
            s["runs"] = len(fr)
            s["runs_violating"] = sum(r["violation_steps"] > 0 for r in fr)
            s["unreported_infeasible_total"] = sum(r["unreported_infeasible"] for r in fr)
            s["p99_filter_ms_pooled_max"] = max(r["p99_filter_ms"] for r in fr)
            clean = [r for r in fr if r["seed"] in base and base[r["seed"]]["violation_steps"] == 0]
            if filt != "none" and clean:
                s["rmse_ratio_clean"] = stats.paired([r["rmse"] for r in clean],
                                                     [base[r["seed"]]["rmse"] for r in clean])
            if filt != "none" and base:
                both = [r for r in fr if r["seed"] in base]
                s["rmse_ratio_all"] = stats.paired([r["rmse"] for r in both], [base[r["seed"]]["rmse"] for r in both])
            per[filt] = s
        out[scen] = per
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, required=True, help="launch file or params file")
    ap.add_argument("--disturbances", type=Path, default=None)
    ap.add_argument("--constraints", type=Path, default=None)
    ap.add_argument("--residual", type=Path, default=None, help="the filter's learned residual (.npz)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--filters", nargs="+", default=["none", "cbf", "mpsc"], choices=["none", "cbf", "mpsc"])
    ap.add_argument("--seconds", type=float, default=None, help="default: the plant's duration")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "safety_filter.json")
    ap.add_argument("--append", action="store_true", help="keep the file's records of other scenarios")
    ap.add_argument("--timing-repeats", type=int, default=5, help="replays of seed 0's calls for `timing` (0: none)")
    a = ap.parse_args()
    sections, constraints, disturbances = load_scenario_files(a.scenario, a.constraints, a.disturbances)
    seconds = a.seconds or float(sections["plant"].get("duration", 10.0))
    name = a.scenario.name.removesuffix(".launch.xml").removesuffix(".yaml")
    model_error = None
    top_scen: dict[str, Any] = {"scenario": name, "params": str(a.scenario), "constraints": str(constraints),
                                "disturbances": str(disturbances), "seconds": seconds}
    if a.residual is not None:
        model_error = measure_model_error(sections, constraints, disturbances, a.residual, seconds)
        top_scen["model_error"] = model_error.tolist()
        top_scen["residual"] = str(a.residual)
        top_scen["input_response"] = input_response(sections, disturbances, a.residual, seconds)
        print(f"model_error (validation x {VALIDATION_FACTOR}): {np.round(model_error, 6).tolist()}")
    mpsc_error = None
    if "mpsc" in a.filters and _flatten(dict(sections.get("safety_filter", {}))).get("mpsc.offset_free", False):
        mpsc_error = measure_offset_error(sections, constraints, disturbances, a.residual, seconds)
        top_scen["mpsc_model_error"] = mpsc_error.tolist()
        print(f"mpsc model_error (offset-free, validation x {VALIDATION_FACTOR}): {np.round(mpsc_error, 6).tolist()}")
    if "mpsc" in a.filters:
        # What MPSC is built around (the model's own steady state, the tube at the horizon).
        top_scen["mpsc_design"] = build_for(sections, constraints, "mpsc", a.residual, model_error,
                                            mpsc_error).design()
    records = []
    t0 = time.perf_counter()
    timings: dict[str, Any] = {}
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for filt in a.filters:
            calls: list[tuple[np.ndarray, np.ndarray, float]] = []
            r = run(sections, constraints, disturbances, filt, seed, seconds, a.residual, model_error, calls=calls,
                    mpsc_error=mpsc_error)
            if seed == a.first_seed and filt != "none" and a.timing_repeats > 0:
                timings[filt] = timing(sections, constraints, filt, a.residual, model_error, calls, a.timing_repeats,
                                       mpsc_error)
                print(f"{name} {filt} timing: {timings[filt]}", flush=True)
            r["scenario"] = name
            records.append(r)
            print(f"{name} seed {seed} {filt:4s}: violations {r['violation_steps']:4d} worst {r['max_violation']:.4f} "
                  f"interv {r['mean_intervention']:.4f} rmse {r['rmse']:.4f} p99 {r['p99_filter_ms']:.3f} ms "
                  f"infeasible {r['infeasible_steps']} unreported {r['unreported_infeasible']}", flush=True)
    top_scen["timing"] = timings
    scenarios_top = [top_scen]
    if a.append and a.out.exists():
        import json
        old = json.loads(a.out.read_text())
        records = [r for r in old["records"] if r["scenario"] != name] + records
        scenarios_top = [s for s in old.get("scenarios", []) if s["scenario"] != name] + scenarios_top
    print(f"{time.perf_counter() - t0:.1f} s")
    write_records(a.out, records, scenarios=scenarios_top, summaries=summaries(records),
                  note="filter times measured on a 2-core machine shared with other jobs at the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
