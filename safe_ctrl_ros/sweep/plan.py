"""The runs of a sweep: one per (variant, seed), each with its launch arguments, params-file overlay
and disturbance scenario, and the files that carry them into the run (`materialize`).

How a draw reaches a run: the launch files take a params file (`params:=`) and a disturbance
scenario (`disturbances:=`). A run's params file is the launch file's default one with the
variant's entries, the draws (`randomize.params`), the plant's `init_randomization` and `seed` (the
plant draws the initial state itself, from its seed) and the search's entries written in; its
scenario is the default one with the drawn fields and a seed of its own. Both are written into the
run's folder, and `run.json` there holds everything needed to re-run that one run alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safe_ctrl_ros.bringup.launch_xml import LaunchPlan, parse_launch_file
from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.sweep.draws import apply_params, apply_scenario, derived_seed, draw_all
from safe_ctrl_ros.sweep.spec import ParamPath, SweepSpec

SET_BY_SWEEP = ("record", "bag", "autostart", "summary_file")


@dataclass
class RunPlan:
    """One run: what to launch and what to write into its folder."""

    variant: str
    seed: int
    launch: Path
    args: dict[str, str]  # launch arguments (the params and disturbances files are added by materialize)
    params: dict[str, Any] | None  # the params-file body to write (None: the launch file's own)
    scenario: dict[str, Any] | None  # the disturbance scenario to write (None: the launch file's own)
    draws: dict[str, Any] = field(default_factory=dict)  # what was drawn, by path
    cost_q: list[float] | None = None
    cost_r: list[float] | None = None

    @property
    def run_id(self) -> str:
        return f"{self.variant}/seed_{self.seed:04d}"

    def digest(self) -> str:
        """What the run's results depend on: a changed spec gives another digest (resume re-runs it)."""
        blob = json.dumps([str(self.launch), self.args, self.params, self.scenario, self.cost_q, self.cost_r],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "seed": self.seed, "launch": str(self.launch), "args": self.args,
                "params": self.params, "scenario": self.scenario, "draws": self.draws, "cost_q": self.cost_q,
                "cost_r": self.cost_r}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> RunPlan:
        return RunPlan(str(data["variant"]), int(data["seed"]), Path(data["launch"]), dict(data["args"]),
                       data["params"], data["scenario"], dict(data["draws"]), data["cost_q"], data["cost_r"])


def launch_plan(launch: Path, args: Mapping[str, str]) -> LaunchPlan:
    """The launch file's nodes for `args`; an argument the file does not declare is an error."""
    plan = parse_launch_file(launch, dict(args))
    unknown = sorted(set(args) - set(plan.descriptions))
    if unknown:
        raise ConfigError(f"{launch.name}: unknown launch argument(s) {unknown}; the file declares "
                          f"{sorted(plan.descriptions)}")
    return plan


def _check_paths(plan: LaunchPlan, overlay: Mapping[ParamPath, Any], where: str) -> None:
    nodes = {n.label: n for n in plan.nodes}
    for path in overlay:
        if path.node not in nodes:
            raise ConfigError(f"{where}: {path}: the launch file {plan.file.name} starts no node '{path.node}'; "
                              f"its nodes: {sorted(nodes)}")
        inline = {name for name, _ in nodes[path.node].params}
        if path.name in inline:
            raise ConfigError(f"{where}: {path}: {plan.file.name} sets '{path.name}' of '{path.node}' itself "
                              f"(<param name=\"{path.name}\">), which overrides the params file: "
                              f"use its launch argument instead")


def _file_arg(plan: LaunchPlan, name: str, why: str) -> Path:
    if name not in plan.descriptions:
        raise ConfigError(f"{plan.file.name} declares no '{name}' launch argument, which {why} needs")
    return Path(plan.arguments[name])


def plan_run(spec: SweepSpec, variant_name: str, seed: int, extra: Mapping[ParamPath, Any] | None = None,
             check: bool = True) -> RunPlan:
    """The run of `variant_name` with `seed` (`extra`: params-file entries of a search trial)."""
    variant = spec.variant(variant_name)
    args = {**spec.args, **variant.args}
    for name in SET_BY_SWEEP:
        args.pop(name, None)
    plan = launch_plan(spec.launch, args)
    where = f"{spec.file.name} (variant {variant.name}, seed {seed})"
    overlay: dict[ParamPath, Any] = dict(variant.params)
    drawn = draw_all(seed, spec.params_draws, "params")
    overlay.update(drawn)
    if spec.init_spread is not None:
        overlay[ParamPath("plant", "init_randomization")] = list(spec.init_spread)
        overlay[ParamPath("plant", "seed")] = derived_seed(seed, "plant")
    overlay.update(extra or {})
    if check:
        _check_paths(plan, overlay, where)
    params = None
    if overlay:
        base = _file_arg(plan, "params", "a params-file entry (variant params, randomize.params, randomize.init)")
        params = apply_params(read_yaml(base, "params file") or {}, overlay, where)
    scenario = None
    dist_drawn = draw_all(seed, spec.disturbance_draws, "disturbances")
    if dist_drawn or (spec.disturbance_seed and "disturbances" in plan.descriptions):
        base = _file_arg(plan, "disturbances", "randomize.disturbances")
        scenario_seed = derived_seed(seed, "disturbances") if spec.disturbance_seed else None
        scenario = apply_scenario(read_yaml(base, "disturbance scenario") or {}, dist_drawn, scenario_seed, where)
        if "seed" in plan.descriptions:
            if spec.disturbance_seed and "seed" in args:
                raise ConfigError(f"{where}: the launch argument 'seed' ({args['seed']}) and "
                                  f"randomize.disturbance_seed (true) both set the disturbance seed: "
                                  f"drop one (disturbance_seed: false keeps the argument's)")
            args["seed"] = "-1"  # the scenario file's seed (the one drawn for this run)
    draws: dict[str, Any] = {f"params:{k}": v for k, v in drawn.items()}
    draws.update({f"disturbances:{k}": v for k, v in dist_drawn.items()})
    if spec.init_spread is not None:
        draws["plant.seed"] = derived_seed(seed, "plant")
    if scenario is not None and spec.disturbance_seed:
        draws["disturbances.seed"] = scenario["seed"]
    return RunPlan(variant.name, seed, spec.launch, args, params, scenario, draws, spec.cost_q, spec.cost_r)


def plan_runs(spec: SweepSpec, variants: list[str] | None = None, seeds: list[int] | None = None) -> list[RunPlan]:
    """Every run of the spec, seeds outer and variants inner (a partial sweep still pairs its variants)."""
    names = variants or [v.name for v in spec.variants]
    for name in names:
        spec.variant(name)
    return [plan_run(spec, name, seed) for seed in (seeds or spec.seeds) for name in names]


def materialize(run: RunPlan, folder: Path) -> dict[str, str]:
    """Write the run's params file and scenario into `folder`; the launch arguments that use them."""
    folder.mkdir(parents=True, exist_ok=True)
    args = dict(run.args)
    if run.params is not None:
        (folder / "params.yaml").write_text(yaml.safe_dump(run.params, sort_keys=False))
        args["params"] = str(folder / "params.yaml")
    if run.scenario is not None:
        (folder / "disturbances.yaml").write_text(yaml.safe_dump(run.scenario, sort_keys=False))
        args["disturbances"] = str(folder / "disturbances.yaml")
    (folder / "run.json").write_text(json.dumps(run.to_json(), indent=1, default=str))
    return args
