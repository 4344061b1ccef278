"""safe-ctrl-flagship: the flagship experiment, its two comparisons, one table (what `make demo` runs).

    safe-ctrl-flagship [--out runs/flagship] [--duration 40] [--seed -1] [--variants nominal qzo_ff bp]

Runs launch/quadrotor_2d_flagship.launch.xml (2D quadrotor figure-8, NMPC with a learned residual,
a 30% heavier vehicle, wind gusts) once per variant, one after the other so they do not share the
two cores: `nominal` (the pretrained residual, adapter off), `qzo_ff` (the on-board QZO-FF
adapter) and `bp` (the same adapter with backpropagation, the accuracy reference). Each run is
recorded into a bag (the recorder starts the episode once it listens to every topic); progress
comes from the bag's metadata.yaml, which the recorder rewrites every second. Then the bags are
analysed (safe_ctrl_ros.bag.report) into one table (tracking RMSE, violations, p99 solve time,
adapter updates and training memory), a JSON file and plots.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safe_ctrl_ros.bag.report import comparison_plot, load_run, metrics, plots
from safe_ctrl_ros.bringup.domain import claim_domain
from safe_ctrl_ros.bringup.launch_xml import find_package_share
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.json_out import dumps

LAUNCH = "quadrotor_2d_flagship.launch.xml"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    args: tuple[str, ...]


VARIANTS = {
    "nominal": Variant("nominal", "pretrained residual, no adaptation", ("adapter:=false",)),
    "qzo_ff": Variant("qzo_ff", "QZO-FF on board (fixed point, 2 forward passes)", ("adapter:=true", "method:=qzo_ff")),
    "bp": Variant("bp", "backpropagation on board (float, reference)", ("adapter:=true", "method:=bp")),
}


def launch_file() -> Path:
    """The launch file of the source tree, else of an installed share directory."""
    source = Path(__file__).resolve().parents[2] / "launch" / LAUNCH
    if source.is_file():
        return source
    installed = find_package_share("safe_ctrl_ros") / "launch" / LAUNCH  # ConfigError if not installed
    if installed.is_file():
        return installed
    raise ConfigError(f"{LAUNCH} not found in the source tree or {installed.parent}: run `make setup` first")


def bag_sim_seconds(bag: Path) -> float:
    """How much sim time the bag being recorded holds so far (0 before the first write)."""
    try:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return float(info["duration"]["nanoseconds"]) * 1e-9
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return 0.0


def run_variant(variant: Variant, index: int, total: int, out: Path, duration: float, seed: int) -> Path:
    bag = out / variant.name
    log = out / f"{variant.name}.log"
    cmd = [
        sys.executable, "-m", "safe_ctrl_ros.bringup.cli", str(launch_file()), *variant.args,
        "record:=true", f"bag:={bag}", "autostart:=false", f"duration:={duration}", f"seed:={seed}",
        f"summary_file:={out / (variant.name + '_summary.json')}",
    ]  # fmt: skip
    tty = sys.stdout.isatty()
    start = time.monotonic()
    last_print = -1e9
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                wall = time.monotonic() - start
                sim = bag_sim_seconds(bag)
                stage = f"{sim:5.1f}/{duration:.0f} s sim" if sim > 0 else "starting the graph"
                line = f"[{index}/{total}] {variant.name:<8} {stage}, {wall:5.1f} s wall"
                if tty:
                    print("\r" + line, end="", flush=True)
                elif wall - last_print >= 10.0:
                    print(line, flush=True)
                    last_print = wall
        except KeyboardInterrupt:
            proc.send_signal(2)
            proc.wait(20)
            raise
    wall = time.monotonic() - start
    print(("\r" if tty else "") + f"[{index}/{total}] {variant.name:<8} done in {wall:.1f} s wall (log: {log})"
          + " " * 10, flush=True)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise ConfigError(f"the {variant.name} run failed (exit {proc.returncode}); the end of {log}:\n{tail}")
    return bag


def table(rows: list[dict[str, Any]], labels: dict[str, str]) -> str:
    def num(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
        value = row.get(key)
        return "-" if value is None else format(value * scale, fmt)

    lines = [
        "| variant | RMSE last 10 s (m) | RMSE all (m) | violation steps | p99 solve (ms) | fallback steps "
        "| model updates | training memory above inference (KiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        memory = num(row, "adapter_memory_bytes", ".1f", 1 / 1024) if "adapter_memory_bytes" in row else "- (off)"
        lines.append(
            f"| {row['run']}: {labels[row['run']]} | {num(row, 'tracking_rmse_last_10s', '.4f')} "
            f"| {num(row, 'tracking_rmse', '.4f')} | {row.get('violation_steps', '-')} "
            f"| {num(row, 'solve_ms_p99', '.2f')} | {row.get('fallback_steps', '-')} "
            f"| {row.get('adapter_updates', '-')} | {memory} |"
        )
    return "\n".join(lines) + "\n"


def frame_strips(runs: list[Any], folder: Path) -> list[Path]:
    """Six frames of each run, rendered by MuJoCo (plots/<variant>_frames.png); none, with a note, where
    MuJoCo or an offscreen OpenGL is missing (safe-ctrl-render says what to install)."""
    try:
        from safe_ctrl_ros.simulation.mujoco.render import frame_strip

        return [frame_strip(r.states, r.references, str(r.system), folder / f"{r.name}_frames.png")
                for r in runs if r.states and r.system]
    except (ConfigError, ImportError) as exc:
        print(f"(no frame strips: {exc})", flush=True)
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-flagship", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/flagship"), help="parent folder of this run's folder")
    parser.add_argument("--duration", type=float, default=40.0, help="episode length, simulated seconds")
    parser.add_argument("--seed", type=int, default=-1, help="disturbance seed (-1: the scenario file's)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    opts = parser.parse_args(argv)
    if opts.duration <= 0:
        parser.error("--duration must be positive")
    if not os.environ.get("ROS_DOMAIN_ID"):
        # A domain of its own (as tests and benchmarks claim), so no other graph on this machine
        # is recorded into the bags or talks to these nodes.
        os.environ["ROS_DOMAIN_ID"] = str(claim_domain())
    out = opts.out / time.strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True)
        print(f"flagship: 2D quadrotor figure-8, NMPC + learned residual, 30% heavier, gusts; {opts.duration:.0f} s "
              f"sim per run; variants {', '.join(opts.variants)}; results in {out}", flush=True)
        variants = [VARIANTS[v] for v in opts.variants]
        bags = [run_variant(v, i + 1, len(variants), out, opts.duration, opts.seed) for i, v in enumerate(variants)]
        print("analysing the bags ...", flush=True)
        runs = [load_run(b) for b in bags]
        rows = [metrics(r) for r in runs]
    except ConfigError as exc:
        print(f"\nsafe-ctrl-flagship: error: {exc}", file=sys.stderr)
        return 1
    text = table(rows, {v.name: v.label for v in variants})
    (out / "table.md").write_text(text)
    (out / "report.json").write_text(dumps(rows))
    figures = [comparison_plot(runs, out / "plots" / "tracking_error.png", "flagship: position error")]
    for run in runs:
        figures += plots(run, out / "plots")
    figures += frame_strips(runs, out / "plots")
    print()
    print(text)
    print("bags:  " + "  ".join(str(b) for b in bags))
    print("plots: " + "  ".join(str(f) for f in figures))
    print(f"table: {out / 'table.md'}  metrics: {out / 'report.json'}")
    seed = "the scenario file's" if opts.seed < 0 else str(opts.seed)
    print(f"(one seed ({seed}): an example, not a result; the figures over seeds with their spread come from "
          "`safe-ctrl-sweep config/sweeps/flagship.yaml`, docs/EXPERIMENTS.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
