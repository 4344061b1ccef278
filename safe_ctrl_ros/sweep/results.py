"""A sweep's statistics, tables, plots and result files (ROS-free).

Per variant, over its seeds (ok runs): for every numeric metric the mean, standard deviation,
Student-t and bootstrap 95% confidence intervals of the mean, the worst seed and the CVaR at 0.5
(safe_ctrl_ros.evaluation.stats); the failure rate (episodes that ended early) and the runs that
failed with their reasons. Between variants: per-seed differences against the first variant over the
seeds both ran, with their bootstrap 95% interval. Output: `sweep.json` (provenance, the spec's
settings, summaries, paired differences, every run's record), `table.md`, and plots: per-variant
distributions of the table's metrics, and the position error's rolling RMS over time (mean over
seeds, band from the smallest to the largest value over seeds at each time).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.evaluation.provenance import provenance
from safe_ctrl_ros.json_out import dumps
from safe_ctrl_ros.sweep.spec import DEFAULT_COLUMNS, Column
from safe_ctrl_ros.systems.base import FloatArray

# Bookkeeping, not metrics.
NOT_METRICS = frozenset({"seed", "pid", "domain_id", "run_wall_s", "wall_s", "steps", "attempts"})
# Metrics where a higher value is better (the worst seed is the lowest).
HIGHER_IS_BETTER = frozenset({"return", "rl_reward", "episode_length", "adapter_updates"})
BOOTSTRAP_SEED = 0
WINDOW_S = 3.0


def numeric_metrics(records: Sequence[dict[str, Any]]) -> list[str]:
    """The numeric (not boolean) metrics every ok record has, in first-seen order."""
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return []
    names = [k for k, v in ok[0].items()
             if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [k for k in names if all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for r in ok)]


def summary(values: Sequence[float], seeds: Sequence[int], metric: str) -> dict[str, Any]:
    worse: stats.Worse = "lower" if metric in HIGHER_IS_BETTER else "higher"
    out: dict[str, Any] = dict(stats.summarize(values, worse))
    low, high = stats.bootstrap_ci(values, BOOTSTRAP_SEED)
    out["boot95_low"], out["boot95_high"] = low, high
    worst = int(np.argmin(values) if worse == "lower" else np.argmax(values))
    out["worst_seed"] = int(seeds[worst])
    return out


def aggregate(records: Sequence[dict[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """`summaries` per variant and `paired` differences against the first variant (and, where the
    first variant's values are positive, the relative change variant / first - 1 per seed)."""
    summaries: dict[str, Any] = {}
    metrics_of: dict[str, list[str]] = {}
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for name in variants:
        mine = [r for r in records if r["variant"] == name]
        ok = [r for r in mine if r.get("status") == "ok"]
        by_variant[name] = {int(r["seed"]): r for r in ok}
        entry: dict[str, Any] = {
            "runs": len(mine), "ok": len(ok), "failed_runs": len(mine) - len(ok),
            "failures": [{"seed": r["seed"], "reason": r.get("reason", "")} for r in mine if r.get("status") != "ok"],
            "failure_rate": (sum(bool(r.get("failed_early")) for r in ok) / len(ok)) if ok else None,
            "metrics": {},
        }
        checked = [r for r in ok if "lockstep_breaks" in r]
        if checked:  # runs where a node went on after a timeout: in lockstep, not reproducible
            entry["lockstep"] = {"checked": len(checked), "broken": [
                {"seed": int(r["seed"]), "breaks": int(r["lockstep_breaks"])} for r in checked if r["lockstep_breaks"]]}
        seeds = [int(r["seed"]) for r in ok]
        metrics_of[name] = numeric_metrics(ok)  # a variant's own (a variant without the adapter has no updates)
        for m in metrics_of[name]:
            entry["metrics"][m] = summary([float(r[m]) for r in ok], seeds, m)
        summaries[name] = entry
    paired: dict[str, Any] = {}
    if variants:
        base = variants[0]
        for name in variants[1:]:
            common = sorted(set(by_variant[name]) & set(by_variant[base]))
            if not common:
                continue
            entry = {"against": base, "seeds": common, "metrics": {}}
            for m in (m for m in metrics_of[name] if m in metrics_of[base]):
                diff = [float(by_variant[name][s][m]) - float(by_variant[base][s][m]) for s in common]
                low, high = stats.bootstrap_ci(diff, BOOTSTRAP_SEED)
                entry["metrics"][m] = {"n": len(diff), "mean": float(np.mean(diff)), "boot95_low": low,
                                       "boot95_high": high}
                base_values = [float(by_variant[base][s][m]) for s in common]
                if all(v > 0 for v in base_values):  # the change relative to the base, seed by seed
                    rel = [d / v for d, v in zip(diff, base_values, strict=True)]
                    rlow, rhigh = stats.bootstrap_ci(rel, BOOTSTRAP_SEED)
                    entry["metrics"][m]["relative"] = {"mean": float(np.mean(rel)), "boot95_low": rlow,
                                                       "boot95_high": rhigh, "min": min(rel), "max": max(rel)}
            paired[f"{name}-{base}"] = entry
    return {"summaries": summaries, "paired": paired}


def _cell(summaries: dict[str, Any], variant: str, metric: str, fmt: str) -> str:
    s = summaries[variant]["metrics"].get(metric)
    if s is None:
        return "-"
    return format(s["mean"], fmt)


def _breaks(agg: dict[str, Any]) -> list[str]:
    """A line on the runs that went on after a wall-clock timeout (bag report `lockstep_breaks`):
    in lockstep they do not repeat bit for bit, so the table says which they are."""
    kept = {v: s["lockstep"] for v, s in agg["summaries"].items() if "lockstep" in s}
    runs = [(v, b["seed"], b["breaks"]) for v, k in kept.items() for b in k["broken"]]
    checked = sum(k["checked"] for k in kept.values())
    if not checked:
        return []
    if not runs:
        return ["", f"Lockstep kept in all {checked} runs that report it: no node went on after a timeout "
                    "(each run repeats bit for bit)."]
    return ["", f"Runs where a node went on after a wall-clock timeout (not reproducible bit for bit), of {checked}: "
            + ", ".join(f"{v} seed {seed} ({n})" for v, seed, n in runs) + "."]


def markdown(agg: dict[str, Any], variants: Sequence[str], columns: Sequence[Column] = DEFAULT_COLUMNS,
             title: str = "") -> str:
    """The sweep's tables: the spec's columns (means over seeds), the spread of each, paired differences."""
    summaries = agg["summaries"]
    lines = [f"### {title}", ""] if title else []
    lines += ["| variant | seeds ok | " + " | ".join(c.label for c in columns) + " |",
              "|---|---:|" + "---:|" * len(columns)]
    for v in variants:
        s = summaries[v]
        failed = f" ({s['failed_runs']} failed)" if s["failed_runs"] else ""
        lines.append(f"| {v} | {s['ok']}{failed} | " + " | ".join(_cell(summaries, v, c.metric, c.format)
                                                                    for c in columns) + " |")
    lines += ["", "Means over seeds. Spread per variant: mean, standard deviation, bootstrap 95% CI of the "
                  "mean, worst seed, CVaR at 0.5 (mean of the worse half); failure rate: episodes that "
                  "ended early.", "",
              "| variant | metric | mean | std | 95% CI (bootstrap) | worst (seed) | CVaR 0.5 |",
              "|---|---|---:|---:|---|---:|---:|"]
    for v in variants:
        for c in columns:
            s = summaries[v]["metrics"].get(c.metric)
            if s is None:
                continue
            f = c.format
            lines.append(f"| {v} | {c.label} | {s['mean']:{f}} | {s['std']:{f}} | "
                         f"[{s['boot95_low']:{f}}, {s['boot95_high']:{f}}] | {s['worst']:{f}} ({s['worst_seed']}) "
                         f"| {s['cvar50']:{f}} |")
        rate = summaries[v]["failure_rate"]
        lines.append(f"| {v} | failure rate | {'-' if rate is None else f'{rate:.2f}'} | | | | |")
    if agg["paired"]:
        lines += ["", "Paired differences over the same seeds (variant minus the first), bootstrap 95% CI:", "",
                  "| difference | seeds | " + " | ".join(c.label for c in columns) + " |",
                  "|---|---:|" + "---|" * len(columns)]
        for name, p in agg["paired"].items():
            cells = []
            for c in columns:
                d = p["metrics"].get(c.metric)
                f = c.format
                cells.append("-" if d is None else
                             f"{d['mean']:+{f}} [{d['boot95_low']:+{f}}, {d['boot95_high']:+{f}}]")
            lines.append(f"| {name} | {len(p['seeds'])} | " + " | ".join(cells) + " |")
        lines += ["", "Relative change over the same seeds (variant / first - 1, per seed), mean [bootstrap 95% CI] "
                  "(range over seeds):", "", "| change | " + " | ".join(c.label for c in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for name, p in agg["paired"].items():
            rels = [p["metrics"].get(c.metric, {}).get("relative") for c in columns]
            lines.append(f"| {name} | " + " | ".join(
                "-" if r is None else f"{100 * r['mean']:+.1f}% [{100 * r['boot95_low']:+.1f}, "
                f"{100 * r['boot95_high']:+.1f}] ({100 * r['min']:+.0f}..{100 * r['max']:+.0f})" for r in rels) + " |")
    lines += _breaks(agg)
    failures = [(v, f) for v in variants for f in summaries[v]["failures"]]
    if failures:
        lines += ["", "Failed runs:", *[f"- {v} seed {f['seed']}: {f['reason'].splitlines()[0] if f['reason'] else ''}"
                                        for v, f in failures]]
    return "\n".join(lines) + "\n"


def rolling_rms(t: FloatArray, err: FloatArray, window_s: float = WINDOW_S) -> FloatArray:
    """The trailing RMS of `err` over `window_s` (as the flagship's comparison plot)."""
    if t.size < 2:
        return np.asarray(np.abs(err), dtype=np.float64)
    n = max(1, round(window_s / float(np.median(np.diff(t)))))
    return np.asarray(np.sqrt(np.convolve(err**2, np.ones(n) / n, mode="full")[: err.size]), dtype=np.float64)


def plots(folder: Path, records: Sequence[dict[str, Any]], variants: Sequence[str],
          columns: Sequence[Column]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = folder / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r.get("status") == "ok"]
    cols = [c for c in columns if all(isinstance(r.get(c.metric), (int, float)) for r in ok)] if ok else []
    written = []
    if cols:
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.6), squeeze=False)
        for ax, c in zip(axes[0], cols, strict=True):
            data = [[float(r[c.metric]) for r in ok if r["variant"] == v] for v in variants]
            ax.boxplot(data, showfliers=False)
            for i, d in enumerate(data):
                ax.scatter(np.full(len(d), i + 1) + np.linspace(-0.12, 0.12, len(d)), d, s=10, alpha=0.7)
            ax.set_xticks(range(1, len(variants) + 1), list(variants), rotation=20)
            ax.set_title(c.label, fontsize=9)
        fig.tight_layout()
        path = out_dir / "distributions.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    drew = False
    for v in variants:
        series = []
        for r in ok:
            f = folder / "runs" / v / f"seed_{int(r['seed']):04d}" / "series.npz"
            if r["variant"] == v and f.is_file():
                with np.load(f) as data:
                    if data["t"].size > 1:
                        series.append((data["t"], rolling_rms(data["t"], data["error"])))
        if not series:
            continue
        grid = series[0][0]
        stack = np.array([np.interp(grid, t, e, right=np.nan) for t, e in series])
        mean = np.nanmean(stack, axis=0)
        line = ax.plot(grid, mean, lw=1.6, label=f"{v} (mean of {len(series)} seeds)")[0]
        ax.fill_between(grid, np.nanmin(stack, axis=0), np.nanmax(stack, axis=0), color=line.get_color(),
                        alpha=0.18)
        drew = True
    if drew:
        ax.set_xlabel("t (s)")
        ax.set_ylabel(f"position error, {WINDOW_S:g} s RMS (m)")
        ax.set_title("position error over time (band: smallest to largest over seeds)")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        path = out_dir / "error_vs_time.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    plt.close(fig)
    return written


def write_results(folder: Path, records: list[dict[str, Any]], variants: Sequence[str],
                  columns: Sequence[Column], title: str, **top: Any) -> dict[str, Any]:
    """sweep.json, table.md and the plots of a finished sweep; the aggregate. `run_code` lists the
    commits the runs ran at (`provenance` is the aggregation's: a resumed sweep may differ)."""
    agg = aggregate(records, variants)
    text = markdown(agg, variants, columns, title)
    (folder / "table.md").write_text(text)
    codes = sorted({f"{c['commit']}{'+dirty' if c['dirty'] else ''}" for r in records if (c := r.get("code"))})
    data = {"provenance": provenance(), "run_code": codes or ["not recorded"], **top, "variants": list(variants),
            "columns": [{"metric": c.metric, "label": c.label, "format": c.format} for c in columns],
            **agg, "records": records}
    (folder / "sweep.json").write_text(dumps(data))
    plots(folder, records, variants, columns)
    return agg


def read_sweep(folder: Path) -> str:
    """The Markdown tables of a sweep folder (its sweep.json, recomputed from the records): what
    safe-ctrl-report prints for a sweep folder."""
    data = json.loads((folder / "sweep.json").read_text())
    columns = [Column(**c) for c in data.get("columns") or []] or list(DEFAULT_COLUMNS)
    agg = aggregate(data["records"], data["variants"])
    return markdown(agg, data["variants"], columns, str(data.get("name", folder.name)))


def is_sweep_folder(path: Path) -> bool:
    return (path / "sweep.json").is_file()
