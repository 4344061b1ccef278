"""safe-ctrl-sweep: many seeded runs of a launch file, in parallel on Ray, with statistics over seeds.

    safe-ctrl-sweep SPEC.yaml [--out DIR] [--mode graph|core] [--address HOST:PORT] [--num-cpus N]
                    [--serial] [--variants A B] [--seeds 0 1] [--fresh] [--search]

Runs every (variant, seed) of the spec (docs/EXPERIMENTS.md) as a Ray task: by default on a Ray
instance started for the sweep on this machine, sized to it; `--address` joins an existing cluster.
`--mode graph` (the default) launches the real nodes and records a bag per run; `--mode core` runs
the same loop without ROS. Results: DIR/table.md, DIR/sweep.json, DIR/plots/, a folder per run
(DIR/runs/<variant>/seed_<n>/). Re-running the same command resumes (completed runs are skipped;
`--fresh` re-runs them). `--search` runs the spec's hyperparameter search instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.sweep.execute import MODES, run_sweep
from safe_ctrl_ros.sweep.plan import plan_runs
from safe_ctrl_ros.sweep.results import write_results
from safe_ctrl_ros.sweep.spec import load_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-sweep", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="the sweep spec (YAML)")
    parser.add_argument("--out", type=Path, help="the sweep's folder (default: runs/sweeps/<name>[_core])")
    parser.add_argument("--mode", choices=MODES, default="graph", help="graph: the ROS nodes; core: without ROS")
    parser.add_argument("--address", help="join this Ray cluster (HOST:PORT of its head) instead of starting one")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: this machine's)")
    parser.add_argument("--serial", action="store_true", help="run in this process, one after the other (no Ray)")
    parser.add_argument("--variants", nargs="+", help="only these variants")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument("--fresh", action="store_true", help="re-run completed runs too")
    parser.add_argument("--search", action="store_true", help="run the spec's hyperparameter search")
    opts = parser.parse_args(argv)
    if opts.num_cpus is not None and opts.num_cpus < 1:
        parser.error("--num-cpus must be at least 1")
    try:
        spec = load_spec(opts.spec)
        out = opts.out or Path("runs") / "sweeps" / (spec.name + ("_core" if opts.mode == "core" else ""))
        if opts.search:
            from safe_ctrl_ros.sweep.search import run_search

            result = run_search(spec, out / "search", opts.mode, opts.address, opts.num_cpus)
            best = result["best"]
            print(f"best of {len(result['trials'])} trials: {result['statistic']} of {result['metric']} = "
                  f"{best['objective']:.6g} with {best['config']}")
            print(f"params file: {result['best_params_file']}  trials: {out / 'search' / 'search.json'}")
            return 0
        unknown = sorted(set(opts.seeds or []) - set(spec.seeds))
        if unknown:
            raise ConfigError(f"--seeds: {unknown} are not seeds of {opts.spec} ({spec.seeds})")
        runs = plan_runs(spec, opts.variants, opts.seeds)
        out.mkdir(parents=True, exist_ok=True)
        print(f"safe-ctrl-sweep: {spec.name}: {len(runs)} runs ({len(runs) // max(1, len(set(r.seed for r in runs)))} "
              f"variant(s) x {len({r.seed for r in runs})} seeds), {opts.mode} mode, "
              f"{'serial' if opts.serial else ('Ray at ' + opts.address if opts.address else 'local Ray')}; "
              f"results in {out}", file=sys.stderr, flush=True)
        records = run_sweep(runs, out, opts.mode, spec.timeout, spec.cpus_per_run, use_ray=not opts.serial,
                            address=opts.address, num_cpus=opts.num_cpus, resume=not opts.fresh)
        variants = list(dict.fromkeys(r.variant for r in runs))
        write_results(out, records, variants, spec.columns, spec.name, name=spec.name, spec=str(spec.file),
                      mode=opts.mode, launch=str(spec.launch), seeds=sorted({r.seed for r in runs}),
                      spec_digest=spec.digest())
    except ConfigError as exc:
        print(f"safe-ctrl-sweep: error: {exc}", file=sys.stderr)
        return 2
    print((out / "table.md").read_text())
    failed = sum(r["status"] != "ok" for r in records)
    print(f"table: {out / 'table.md'}  results: {out / 'sweep.json'}  plots: {out / 'plots'}"
          + (f"  ({failed} failed run(s): see their folders' error.txt / log.txt)" if failed else ""))
    return 1 if failed == len(records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
