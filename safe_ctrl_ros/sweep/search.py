"""safe-ctrl-sweep --search: a hyperparameter search over the spec's ranges, Ray Tune + Optuna.

Each trial is one configuration (a value per `search.space` entry, written into the variant's params
file like any other entry) run on every seed of the spec; its objective is `search.statistic` of
`search.metric` over those seeds (e.g. the CVaR at 0.5 of the tracking RMSE). A trial with a failed
run scores the worst possible value. Optuna's TPE sampler proposes the configurations (seeded with
`search.seed`); with `search.concurrency: 1` (the default) every proposal sees every earlier result,
so the same spec gives the same trials. The best configuration is written as a params file
(`best_params.yaml`: the launch file's params file with the best values in), and every trial into
`search.json`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.evaluation.provenance import provenance
from safe_ctrl_ros.json_out import dumps
from safe_ctrl_ros.sweep.draws import apply_params
from safe_ctrl_ros.sweep.execute import execute_one, ray_init
from safe_ctrl_ros.sweep.plan import launch_plan, plan_run
from safe_ctrl_ros.sweep.spec import Distribution, ParamPath, Search, SweepSpec, parse_path


def objective(values: list[float], statistic: str, mode: str) -> float:
    """`statistic` of per-seed `values`; `worst` and `cvar50` are taken on the side `mode` avoids."""
    v = np.asarray(values, dtype=float)
    worse: stats.Worse = "higher" if mode == "min" else "lower"
    if statistic == "mean":
        return float(v.mean())
    if statistic == "median":
        return float(np.median(v))
    if statistic == "worst":
        return float(v.max() if worse == "higher" else v.min())
    return stats.cvar(v.tolist(), 0.5, worse)


def _domain(dist: Distribution) -> Any:
    from ray import tune

    if dist.kind == "uniform":
        return tune.uniform(dist.low, dist.high)
    if dist.kind == "loguniform":
        return tune.loguniform(dist.low, dist.high)
    if dist.kind == "int":
        return tune.randint(int(dist.low), int(dist.high) + 1)
    if dist.kind == "choice":
        return tune.choice(list(dist.values))
    raise ConfigError(f"search.space: '{dist.kind}' is a draw, not a search range (use uniform, loguniform, "
                      f"int or choice)")


def trial_value(spec: SweepSpec, search: Search, config: dict[str, Any], out: Path, mode: str) -> dict[str, Any]:
    """Run one configuration on every seed; its objective and per-seed values."""
    extra = {parse_path(k, "search.space"): v for k, v in config.items()}
    tag = "_".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items()))
    values, failures = [], []
    for seed in spec.seeds:
        run = plan_run(spec, search.variant, seed, extra)
        folder = out / "trials" / tag.replace("/", "_") / f"seed_{seed:04d}"
        record = execute_one(run.to_json(), str(folder), mode, spec.timeout)
        if record["status"] != "ok" or not isinstance(record.get(search.metric), (int, float)):
            failures.append({"seed": seed, "reason": record.get("reason") or f"no metric '{search.metric}'"})
            continue
        values.append(float(record[search.metric]))
    bad = math.inf if search.mode == "min" else -math.inf
    score = bad if failures or not values else objective(values, search.statistic, search.mode)
    return {"objective": score, "values": values, "failures": failures}


def run_search(spec: SweepSpec, out: Path, mode: str, address: str | None = None,
               num_cpus: int | None = None) -> dict[str, Any]:
    """The search; returns {best config, best objective, trials} and writes best_params.yaml, search.json."""
    search = spec.search
    if search is None:
        raise ConfigError(f"{spec.file.name}: --search needs a `search` section in the spec")
    for path, dist in search.space.items():
        _domain(dist)
        plan_run(spec, search.variant, spec.seeds[0], {path: _midpoint(dist)})  # the paths are checked once here
    ray_init(address, num_cpus)
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    def trainable(config: dict[str, Any]) -> None:
        result = trial_value(spec, search, config, out, mode)
        tune.report({"objective": result["objective"], "failed_runs": len(result["failures"]),
                     "values": result["values"]})

    searcher = ConcurrencyLimiter(OptunaSearch(metric="objective", mode=search.mode, seed=search.seed),
                                  max_concurrent=search.concurrency)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": spec.cpus_per_run}),
        param_space={str(p): _domain(d) for p, d in search.space.items()},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=search.trials),
        run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=1),
    )
    grid = tuner.fit()
    trials: list[dict[str, Any]] = []
    for i in range(len(grid)):
        r = grid[i]
        if r.metrics is None or "objective" not in r.metrics:
            trials.append({"config": r.config, "objective": None, "error": str(r.error)})
            continue
        trials.append({"config": r.config, "objective": r.metrics["objective"], "values": r.metrics.get("values"),
                       "failed_runs": r.metrics.get("failed_runs")})
    scored = [t for t in trials if t["objective"] is not None and math.isfinite(t["objective"])]
    if not scored:
        raise ConfigError(f"search: no trial of {len(trials)} finished with a finite objective; see {out / 'trials'}")
    best = (min if search.mode == "min" else max)(scored, key=lambda t: t["objective"])
    params_file = write_best_params(spec, search, best["config"], out / "best_params.yaml")
    summary = {"variant": search.variant, "metric": search.metric, "statistic": search.statistic,
               "mode": search.mode, "seeds": spec.seeds, "best": best, "best_params_file": str(params_file),
               "trials": trials}
    (out / "search.json").write_text(dumps({"provenance": provenance(), **summary}))
    return summary


def _midpoint(dist: Distribution) -> Any:
    if dist.kind == "choice":
        return dist.values[0]
    if dist.kind == "int":
        return int(dist.low)
    return float(math.sqrt(dist.low * dist.high) if dist.kind == "loguniform" else (dist.low + dist.high) / 2)


def write_best_params(spec: SweepSpec, search: Search, config: dict[str, Any], path: Path) -> Path:
    """The launch file's params file with the variant's entries and the best configuration written in."""
    variant = spec.variant(search.variant)
    args = {**spec.args, **variant.args}
    plan = launch_plan(spec.launch, args)
    if "params" not in plan.descriptions:
        raise ConfigError(f"{spec.launch.name} declares no 'params' launch argument to write the best values into")
    base = read_yaml(plan.arguments["params"], "params file") or {}
    overlay: dict[ParamPath, Any] = dict(variant.params)
    overlay.update({parse_path(k, "search.space"): v for k, v in config.items()})
    data = apply_params(base, overlay, "best configuration")
    header = (f"# safe-ctrl-sweep --search {spec.file.name}: the best of the trials for variant '{search.variant}' "
              f"({search.statistic} of {search.metric}, {search.mode}); "
              + ", ".join(f"{k} = {v}" for k, v in sorted(config.items())) + "\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path
