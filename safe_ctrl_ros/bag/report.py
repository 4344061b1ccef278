"""Run analysis from bags, without ROS: metrics, side-by-side tables, plots, offline re-evaluation.

    safe-ctrl-report BAG [BAG ...] [--markdown FILE] [--json FILE] [--plots DIR] [--constraints FILE]
                     [--system NAME]

A run's topics are found by their names' endings (`plant/state`, `plant/reference`, `plant/cmd`,
`controller/status`, `constraint_monitor/status`, `safety_filter/status`, `disturbance/events`,
`adapter/status`, `adapter/model`), so any namespace works. Types are read from the definitions embedded in the bag.
The system (which state entries are positions in m and angles in rad) is the one the bag names
(metadata.yaml `custom_data.system`, written by the recorder); a bag recorded before the recorder
wrote it gets the system inferred from its state size, with a note saying so (`--system` overrides).
Tracking errors: `tracking_rmse` is the position error in m (the cart-pole's cart x, the quadrotors'
x, y, z), `angle_rmse` the angle error in rad (the pole angle, the quadrotors' attitude), apart.
With a safety filter in the loop (its SafetyFilterStatus on `safety_filter/status`), the interventions
stand next to the violations: `filter_steps` (certified commands, one per state), `interventions`
(steps whose command was changed), `intervention_mean` and `intervention_max` (|u_safe - u_proposed|
over all filter steps, in the input's units), `filter_infeasible_steps` (steps the filter could not
certify and applied its fallback), `filter_solve_ms_p50/p99/max`; `--plots` adds the intervention
over time (infeasible steps marked) under the constraint margin.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros import systems
from safe_ctrl_ros.bag.types import open_bag
from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.json_out import dumps
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel, angle_error, position_error

# Units of the metrics whose names do not carry them (JSON rows hold them under "units").
UNITS = {
    "tracking_rmse": "m", "tracking_rmse_last_10s": "m", "angle_rmse": "rad", "angle_rmse_last_10s": "rad",
    "first_violation_time": "s", "filter_solve_ms_p50": "ms", "filter_solve_ms_p99": "ms",
    "filter_solve_ms_max": "ms",
}


# Topics (by the ending of their names) whose messages a Run keeps as they come, and where.
MESSAGE_LISTS = {
    "controller/status": "controller", "constraint_monitor/status": "monitor",
    "safety_filter/status": "safety_filter", "disturbance/events": "events", "adapter/status": "adapter",
    "adapter/model": "models",
}


def _t(header: Any) -> float:
    return float(header.stamp.sec) + float(header.stamp.nanosec) * 1e-9


@dataclass
class Run:
    name: str
    states: list[tuple[float, FloatArray]] = field(default_factory=list)
    references: dict[float, FloatArray] = field(default_factory=dict)
    commands: list[tuple[float, FloatArray]] = field(default_factory=list)
    controller: list[Any] = field(default_factory=list)
    monitor: list[Any] = field(default_factory=list)
    safety_filter: list[Any] = field(default_factory=list)  # SafetyFilterStatus, one per certified command
    events: list[Any] = field(default_factory=list)
    adapter: list[Any] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)
    topics: dict[str, tuple[str, int]] = field(default_factory=dict)
    complete: bool | None = None  # False: the recorder was killed (the bag ends at its last flush)
    plant_health: dict[str, str] = field(default_factory=dict)  # the plant's last loop-timing diagnostics
    system: str | None = None  # the recorded system (None: unknown, no position or angle metrics)
    system_note: str = ""  # how the system was found, when the bag does not name it
    model: SymbolicModel | None = field(default=None, repr=False)  # which entries are positions, angles


def load_run(path: str | Path, system: str | None = None) -> Run:
    """Read a bag; `system` overrides the system the bag names (or the one inferred for old bags)."""
    bag = Path(path)
    run = Run(bag.name)
    meta = bag / "metadata.yaml"
    recorded: str | None = None
    if meta.is_file():
        info = read_yaml(meta, "bag metadata") or {}
        custom = (info.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
        if "complete" in custom:
            run.complete = str(custom["complete"]).lower() == "true"
        if custom.get("system"):
            recorded = str(custom["system"])
    with open_bag(bag) as reader:
        for con in reader.connections:
            run.topics[con.topic] = (con.msgtype, con.msgcount)
        seen_states: set[float] = set()
        seen_commands: set[float] = set()
        for con, _t_rx, raw in reader.messages():
            topic = con.topic
            msg: Any = reader.deserialize(raw, con.msgtype)
            if topic.endswith("plant/state"):
                t = _t(msg.header)
                if t not in seen_states:  # a re-sent state is recorded twice
                    seen_states.add(t)
                    run.states.append((t, np.asarray(msg.x, dtype=np.float64)))
            elif topic.endswith("plant/reference"):
                run.references[_t(msg.header)] = np.asarray(msg.x_ref, dtype=np.float64)
            elif topic.endswith("plant/cmd"):
                t = _t(msg.header)
                if t not in seen_commands:  # a re-sent state answered twice: the plant applies the first
                    seen_commands.add(t)
                    run.commands.append((t, np.asarray(msg.u, dtype=np.float64)))
            elif kept := next((name for sfx, name in MESSAGE_LISTS.items() if topic.endswith(sfx)), ""):
                getattr(run, kept).append(msg)
            elif topic == "/diagnostics":
                for status in msg.status:
                    if status.name.endswith("plant: loop timing"):
                        run.plant_health = {kv.key: kv.value for kv in status.values}
    run.states.sort(key=lambda s: s[0])
    _find_system(run, recorded, system)
    return run


def _find_system(run: Run, recorded: str | None, given: str | None) -> None:
    """Which system the run is: given, else named by the bag, else inferred from the state size."""
    nx = run.states[0][1].size if run.states else None
    name, how = (given, "given") if given else (recorded, "recorded in the bag")
    if name is None:
        if nx is None:
            return  # no states: nothing to measure
        found = systems.with_state_size(nx)
        if len(found) != 1:
            run.system_note = (f"the bag does not name its system and the state size {nx} fits "
                               f"{', '.join(found) if found else 'no known system'}: no position or angle "
                               f"errors (pass --system)")
            return
        name, how = found[0], "inferred"
        run.system_note = (f"the bag does not name its system (recorded before the recorder wrote it, or by "
                           f"another recorder): '{name}' inferred from the state size {nx}")
    if name not in systems.SYSTEM_NAMES:
        raise ConfigError(f"run '{run.name}': unknown system '{name}' ({how}); known systems: "
                          f"{', '.join(systems.SYSTEM_NAMES)}")
    model = systems.make(name)
    if nx is not None and model.nx != nx:
        raise ConfigError(f"run '{run.name}': system '{name}' ({how}) has {model.nx} states, "
                          f"the bag's plant/state has {nx}")
    run.system, run.model = name, model


def _errors(run: Run, measure: Any) -> tuple[FloatArray, FloatArray]:
    if run.model is None or not run.states:
        return np.zeros(0), np.zeros(0)
    refs = run.references
    pairs = [(t, x, refs[t]) for t, x in run.states if t in refs]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    t = np.array([p[0] for p in pairs])
    err = np.asarray(measure(run.model, np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])))
    return t, err


def tracking_errors(run: Run) -> tuple[FloatArray, FloatArray]:
    """Times and position errors in m (the model's position entries) over the states with a reference."""
    return _errors(run, position_error)


def angle_errors(run: Run) -> tuple[FloatArray, FloatArray]:
    """Times and angle errors in rad (the model's angle entries, wrapped) over the states with a reference."""
    return _errors(run, angle_error)


def _rms(values: FloatArray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def metrics(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"run": run.name, "steps": len(run.states), "system": run.system}
    if run.system_note:
        out["system_note"] = run.system_note
    if run.complete is not None:
        out["recording_complete"] = run.complete
    if run.states:
        t = np.array([s[0] for s in run.states])
        out["sim_time_s"] = float(t[-1] - t[0])
        # Positions (m) and angles (rad) apart: one number never adds metres and radians.
        kinds = [("tracking_rmse", tracking_errors(run))]
        if run.model is not None and run.model.angle_indices:
            kinds.append(("angle_rmse", angle_errors(run)))
        for key, (err_t, errs) in kinds:
            out[key] = _rms(errs) if errs.size else None
            if errs.size:
                out[f"{key}_last_10s"] = _rms(errs[err_t >= t[-1] - 10.0])
    if run.commands:
        u = np.array([c[1] for c in run.commands])
        out["control_effort"] = float(np.mean(np.sum(u**2, axis=1)))
    if run.monitor:
        judged = {_t(m.header): m for m in run.monitor}  # one verdict per state (re-sends repeat it)
        out["violation_steps"] = int(sum(1 for m in judged.values() if any(m.violated)))
        out["failed"] = bool(out["violation_steps"] > 0)
        firsts = [m.first_violation_time for m in run.monitor if m.first_violation_time >= 0]
        out["first_violation_time"] = float(min(firsts)) if firsts else None
        margins = [min(m.margins) for m in run.monitor if len(m.margins)]
        out["worst_margin"] = float(min(margins)) if margins else None
    if run.safety_filter:
        out.update(filter_metrics(run))
    if run.controller:
        ms = np.array([c.solve_time_ms for c in run.controller])
        out["solve_ms_p50"] = float(np.percentile(ms, 50))
        out["solve_ms_p99"] = float(np.percentile(ms, 99))
        out["solve_ms_max"] = float(ms.max())
        out["fallback_steps"] = int(sum(1 for c in run.controller if c.fallback_active))
        out["model_version_final"] = int(run.controller[-1].model_version)
    out["disturbance_events"] = [
        {"t": _t(e.header), "name": e.name, "phase": e.phase, "kind": e.kind} for e in run.events
    ]
    health = run.plant_health
    for key in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms", "jitter_p99_ms", "miss_rate"):
        if key in health and health[key] != "nan":
            out[f"loop_{key}"] = float(health[key])
    for key in ("missed_deadlines", "safe_command_steps", "clipped_commands", "rejected_commands"):
        if key in health:
            out[key] = int(health[key])
    if run.adapter:
        a = run.adapter[-1]
        out["adapter_updates"] = int(a.updates_accepted)
        out["adapter_val_loss"] = float(a.best_val_loss) if math.isfinite(a.best_val_loss) else None
        out["adapter_memory_bytes"] = int(a.training_memory_bytes)
    out.update(lockstep_breaks(run, out))
    out["units"] = {k: unit for k, unit in UNITS.items() if k in out}
    return out


def lockstep_breaks(run: Run, found: dict[str, Any]) -> dict[str, int]:
    """Where the loop went on after a wall-clock timeout instead of the data it waits for, by the
    statuses' running totals: the controller (`controller_sync_breaks`: the monitor's status, an
    adapter round, an adapter restart), the safety filter (`filter_sync_breaks`), the adapter
    (`adapter_transitions_missing`: steps whose data never arrived) and the plant's watchdog
    (`safe_command_steps`); `lockstep_breaks` is their sum. In lockstep a run with any does not repeat
    bit for bit. Bags recorded before the statuses carried the totals give none of these."""
    out: dict[str, int] = {}
    for key, statuses in (("controller_sync_breaks", run.controller), ("filter_sync_breaks", run.safety_filter)):
        totals = [int(s.sync_breaks_total) for s in statuses if hasattr(s, "sync_breaks_total")]
        if totals:
            out[key] = max(totals)  # a running total; the newest status may be missing from the bag
    if not out:
        return out
    if run.adapter and hasattr(run.adapter[-1], "transitions_missing"):
        out["adapter_transitions_missing"] = max(int(a.transitions_missing) for a in run.adapter)
    out["lockstep_breaks"] = sum(out.values()) + int(found.get("safe_command_steps", 0))
    return out


def filter_steps(run: Run) -> list[Any]:
    """The safety filter's statuses, one per state stamp (a re-sent one repeats its verdict), in time order."""
    per_state = {_t(s.header): s for s in run.safety_filter}
    return [per_state[t] for t in sorted(per_state)]


def filter_metrics(run: Run) -> dict[str, Any]:
    steps = filter_steps(run)
    iv = np.array([s.intervention for s in steps], dtype=np.float64)
    ms = np.array([s.solve_time_ms for s in steps], dtype=np.float64)
    return {
        "filter": str(steps[-1].filter),
        "filter_steps": len(steps),
        "interventions": int(sum(1 for s in steps if s.intervened)),
        "intervention_mean": float(np.mean(iv)),
        "intervention_max": float(np.max(iv)),
        "filter_infeasible_steps": int(sum(1 for s in steps if s.infeasible)),
        "filter_solve_ms_p50": float(np.percentile(ms, 50)),
        "filter_solve_ms_p99": float(np.percentile(ms, 99)),
        "filter_solve_ms_max": float(np.max(ms)),
    }


def reevaluate(run: Run, constraints_file: str | Path) -> dict[str, Any]:
    """Re-run the constraint monitor on the recorded true states and applied commands."""
    from safe_ctrl_ros.safety import load_constraints
    from safe_ctrl_ros.safety.monitor import ConstraintMonitor

    if not run.states:
        raise ConfigError(f"run '{run.name}' has no plant/state messages to re-evaluate")
    nx = run.states[0][1].size
    nu = run.commands[0][1].size if run.commands else 1
    mon = ConstraintMonitor(load_constraints(constraints_file, nx, nu), nx, np.zeros(nu))
    cmds = dict(run.commands)
    prev: float | None = None
    for t, x in run.states:
        if prev is not None and prev in cmds:
            mon.command(cmds[prev])
        mon.state(round(t * 1e9), x)
        prev = t
    st = mon.stats
    return {"constraints": str(constraints_file), "steps": st.steps, "violation_steps": st.violation_steps,
            "first_violation_time": st.first_violation_time, "worst_margin": st.worst_margin}


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = ["system", "recording_complete", "steps", "sim_time_s", "tracking_rmse", "tracking_rmse_last_10s",
            "angle_rmse", "angle_rmse_last_10s", "violation_steps", "failed",
            "first_violation_time", "worst_margin", "filter", "filter_steps", "interventions", "intervention_mean",
            "intervention_max", "filter_infeasible_steps", "filter_solve_ms_p50", "filter_solve_ms_p99",
            "filter_solve_ms_max", "control_effort", "solve_ms_p50", "solve_ms_p99",
            "solve_ms_max", "fallback_steps", "loop_latency_p50_ms", "loop_latency_p99_ms", "loop_latency_max_ms",
            "loop_jitter_p99_ms", "loop_miss_rate", "missed_deadlines", "safe_command_steps", "clipped_commands",
            "rejected_commands", "controller_sync_breaks", "filter_sync_breaks", "adapter_transitions_missing",
            "lockstep_breaks", "model_version_final", "adapter_updates", "adapter_val_loss",
            "adapter_memory_bytes"]
    keys = [k for k in keys if any(k in r for r in rows)]

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| metric | " + " | ".join(r["run"] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    lines += [f"| {k}{f' ({UNITS[k]})' if k in UNITS else ''} | " + " | ".join(fmt(r.get(k)) for r in rows) + " |"
              for k in keys]
    events = [
        f"- {r['run']}: " + ", ".join(f"{e['name']} {e['phase']} at {e['t']:.2f} s" for e in r["disturbance_events"])
        for r in rows
        if r.get("disturbance_events")
    ]
    if events:
        lines += ["", "Disturbance events:", *events]
    notes = [f"- {r['run']}: {r['system_note']}" for r in rows if r.get("system_note")]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plots(run: Run, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    model = run.model
    # Positions (m) and angles (rad) on panels of their own; a run of unknown system shows no states.
    groups = [] if model is None else [("position (m)", model.position_indices)]
    if model is not None and model.angle_indices:
        groups.append(("angle (rad)", model.angle_indices))
    panels = 2 + max(len(groups), 1) + (1 if run.safety_filter else 0)
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3 * panels), sharex=True)
    if run.states and model is not None:
        t = np.array([s[0] for s in run.states])
        x = np.array([s[1] for s in run.states])
        ref_t = [ti for ti in t if ti in run.references]
        for ax, (label, dims) in zip(axes, groups, strict=False):
            for d in dims:
                name = model.state_names[d]
                line = ax.plot(t, x[:, d], label=name)[0]
                if ref_t:
                    ax.plot(ref_t, [run.references[ti][d] for ti in ref_t], "--", color=line.get_color(),
                            label=f"{name} reference")
            ax.legend(loc="upper right", fontsize=8)
            ax.set_ylabel(label)
    elif run.states:
        axes[0].set_ylabel("states: system unknown")
    margin_ax, solve_ax = axes[-3 if run.safety_filter else -2], axes[-1]
    if run.monitor:
        tm = [_t(m.header) for m in run.monitor]
        margin_ax.plot(tm, [min(m.margins) if len(m.margins) else np.nan for m in run.monitor])
        margin_ax.axhline(0.0, color="r", lw=0.8)
        margin_ax.set_ylabel("smallest constraint margin")
    if run.safety_filter:
        # The filter's interventions under the violations they prevent: |u_safe - u_proposed| per
        # step, the steps it could not certify (fallback applied) marked.
        iv_ax, steps = axes[-2], filter_steps(run)
        tf = np.array([_t(s.header) for s in steps])
        iv = np.array([s.intervention for s in steps])
        iv_ax.plot(tf, iv, lw=0.8, label=f"{steps[-1].filter}: |u_safe - u_proposed|")
        bad = np.array([bool(s.infeasible) for s in steps])
        if np.any(bad):
            iv_ax.plot(tf[bad], iv[bad], "rx", ms=4, label="not certified (fallback)")
        iv_ax.legend(loc="upper right", fontsize=8)
        iv_ax.set_ylabel("filter intervention")
    if run.controller:
        solve_ax.plot([_t(c.header) for c in run.controller], [c.solve_time_ms for c in run.controller], lw=0.6)
        solve_ax.set_ylabel("solve time (ms)")
    starts = {e.name: _t(e.header) for e in run.events if e.phase == "start"}
    for e in run.events:
        if e.phase == "end" and e.name in starts:
            for ax in axes:
                ax.axvspan(starts[e.name], _t(e.header), color="orange", alpha=0.2)
    solve_ax.set_xlabel("t (s)")
    fig.suptitle(run.name if run.system is None else f"{run.name} ({run.system})")
    fig.tight_layout()
    path = directory / f"{run.name}_overview.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    out.append(path)
    if run.adapter:
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot([_t(a.header) for a in run.adapter], [a.val_loss for a in run.adapter], label="validation loss")
        ax.set_xlabel("t (s)")
        ax.set_yscale("log")
        ax.legend()
        path = directory / f"{run.name}_adapter.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)
    return out


def comparison_plot(runs: list[Run], path: Path, title: str = "", window_s: float = 3.0) -> Path:
    """One figure for several runs: the tracking error over time (faint) and its rolling RMS over
    `window_s`, disturbance windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for run in runs:
        t, err = tracking_errors(run)
        line = ax.plot(t, err, lw=0.5, alpha=0.35)[0]
        if t.size > 1:
            n = max(1, round(window_s / float(np.median(np.diff(t)))))
            rms = np.sqrt(np.convolve(err**2, np.ones(n) / n, mode="full")[: err.size])  # trailing window
            ax.plot(t, rms, lw=1.8, color=line.get_color(), label=f"{run.name} ({window_s:g} s RMS)")
    if runs:
        starts = {e.name: _t(e.header) for e in runs[0].events if e.phase == "start"}
        for e in runs[0].events:
            if e.phase == "end" and e.name in starts:
                ax.axvspan(starts[e.name], _t(e.header), color="orange", alpha=0.15)
    ax.set_xlabel("t (s)")
    names = {run.model.position_names for run in runs if run.model is not None}
    ax.set_ylabel(f"position error (m): {', '.join(names.pop())}" if len(names) == 1 else "position error (m)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-report", description=__doc__.splitlines()[0])
    parser.add_argument("bags", nargs="+", type=Path, help="bags, or sweep folders (safe-ctrl-sweep's output)")
    parser.add_argument("--markdown", type=Path, help="write the table here too")
    parser.add_argument("--json", type=Path, help="write the metrics as JSON")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    parser.add_argument("--constraints", type=Path, help="re-evaluate the runs under these constraints")
    parser.add_argument("--system", choices=systems.SYSTEM_NAMES,
                        help="the system of every bag given, over what a bag names (bags that do not name it "
                             "get it inferred from their state size)")
    opts = parser.parse_args(argv)
    sweeps = [p for p in opts.bags if (p / "sweep.json").is_file()]
    if sweeps:
        from safe_ctrl_ros.sweep.results import read_sweep

        for folder in sweeps:
            print(read_sweep(folder))
        opts.bags = [p for p in opts.bags if p not in sweeps]
        if not opts.bags:
            return 0
    try:
        runs = [load_run(b, opts.system) for b in opts.bags]
        rows = [metrics(r) for r in runs]
        if opts.constraints:
            for r, row in zip(runs, rows, strict=True):
                row["reevaluated"] = reevaluate(r, opts.constraints)
    except ConfigError as exc:
        print(f"safe-ctrl-report: error: {exc}", file=sys.stderr)
        return 2
    for r in runs:
        if r.system_note:
            print(f"safe-ctrl-report: note: {r.name}: {r.system_note}", file=sys.stderr)
    table = markdown(rows)
    print(table)
    if opts.constraints:
        for row in rows:
            print(f"{row['run']} under {opts.constraints}: {row['reevaluated']}")
    if opts.markdown:
        opts.markdown.write_text(table)
    if opts.json:
        opts.json.write_text(dumps(rows))
    if opts.plots:
        for r in runs:
            for p in plots(r, opts.plots):
                print(f"plot: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
