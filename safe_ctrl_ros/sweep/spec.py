"""The sweep spec: a launch file, its arguments, variants, seeds, per-run draws, search ranges, table.

    name: cartpole_mass
    launch: launch/cartpole_nmpc.launch.xml   # relative to the spec's folder, else the current one
    args: {duration: 5.0}                     # launch arguments of every run
    seeds: {first: 0, count: 10}              # or a list: [0, 1, 2]
    variants:                                 # name: launch arguments and params-file entries
      nmpc: {}
      lqr: {args: {controller: lqr}, params: {controller.lqr.R: [0.2]}}
    randomize:
      params:                                 # randomized_inertial_prop: drawn per run into the params file
        plant.model.mass_cart: {distrib: uniform, low: 0.9, high: 1.1}
      init: [0.05, 0.0, 0.05, 0.0]            # randomized_init: the plant's init_randomization (its seed: the run's)
      disturbances:                           # fields of the disturbance file, drawn per run
        push.start: {distrib: uniform, low: 1.5, high: 3.0}
      disturbance_seed: true                  # the scenario's seed drawn from the run's (default true)
    resources: {cpus_per_run: 1}
    timeout: 300                              # wall s per graph run
    metrics: {Q: [1, 1, 10, 1], R: [0.1]}     # safe-control-gym's cost weights (default: ones, 0.1)
    search:                                   # safe-ctrl-sweep --search
      variant: nmpc
      space: {controller.nmpc.R[0]: {distrib: loguniform, low: 0.01, high: 1.0}}
      metric: tracking_rmse
      statistic: cvar50                       # mean | median | worst | cvar50 over the seeds
      mode: min
      trials: 8
      seed: 0
    table:                                    # the Markdown table's columns (default: DEFAULT_COLUMNS)
      - {metric: tracking_rmse, label: "RMSE (m)", format: ".4f"}

A parameter path is `node.parameter` (the node's name in the launch file, then the ROS parameter
name, dots included), optionally with `[i]` for one entry of an array parameter. Distributions:
`uniform` (low, high), `loguniform` (low, high), `normal` (mean, std), `choice` (values), `int`
(low, high, both included). Every problem is a ConfigError that names the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safe_ctrl_ros import config_check as check
from safe_ctrl_ros.errors import ConfigError, read_yaml

DISTRIBUTIONS = ("uniform", "loguniform", "normal", "choice", "int")
STATISTICS = ("mean", "median", "worst", "cvar50")
MODES = ("min", "max")
_PATH = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_.]*?)(?:\[(\d+)\])?$")
_DIST_PATH = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*)(?:\[(\d+)\])?$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Distribution:
    kind: str
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 0.0
    values: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.kind in ("uniform", "loguniform", "int"):
            return f"{self.kind}({self.low:g}, {self.high:g})"
        if self.kind == "normal":
            return f"normal({self.mean:g}, {self.std:g})"
        return f"choice({list(self.values)})"


@dataclass(frozen=True)
class ParamPath:
    """`node.parameter[index]`: one entry of one node's parameters."""

    node: str
    name: str
    index: int | None = None

    def __str__(self) -> str:
        return f"{self.node}.{self.name}" + ("" if self.index is None else f"[{self.index}]")


@dataclass(frozen=True)
class Variant:
    name: str
    args: dict[str, str]
    params: dict[ParamPath, Any]


@dataclass(frozen=True)
class Column:
    metric: str
    label: str
    format: str


@dataclass(frozen=True)
class Search:
    variant: str
    space: dict[ParamPath, Distribution]
    metric: str
    statistic: str
    mode: str
    trials: int
    seed: int
    concurrency: int


@dataclass
class SweepSpec:
    name: str
    file: Path
    launch: Path
    args: dict[str, str]
    seeds: list[int]
    variants: list[Variant]
    params_draws: dict[ParamPath, Distribution] = field(default_factory=dict)
    init_spread: list[float] | None = None
    disturbance_draws: dict[ParamPath, Distribution] = field(default_factory=dict)
    disturbance_seed: bool = True
    cpus_per_run: float = 1.0
    timeout: float = 600.0
    cost_q: list[float] | None = None
    cost_r: list[float] | None = None
    search: Search | None = None
    columns: list[Column] = field(default_factory=list)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"{self.file}: no variant '{name}'; variants: {[v.name for v in self.variants]}")

    def digest(self) -> str:
        """A digest of what the runs depend on (not the table or the search)."""
        blob = json.dumps({
            "launch": str(self.launch), "args": self.args,
            "variants": [[v.name, v.args, {str(k): x for k, x in v.params.items()}] for v in self.variants],
            "params": {str(k): repr(d) for k, d in self.params_draws.items()}, "init": self.init_spread,
            "disturbances": {str(k): repr(d) for k, d in self.disturbance_draws.items()},
            "disturbance_seed": self.disturbance_seed, "Q": self.cost_q, "R": self.cost_r,
        }, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


DEFAULT_COLUMNS = [
    Column("tracking_rmse_last_10s", "RMSE last 10 s (m)", ".4f"),
    Column("tracking_rmse", "RMSE all (m)", ".4f"),
    Column("violation_steps", "violation steps", ".1f"),
    Column("return", "return", ".1f"),
    Column("fallback_steps", "fallback steps", ".1f"),
]


def _arg_text(value: Any, where: str) -> str:
    """A launch argument's value as the command line writes it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ConfigError(f"{where}: a launch argument is a string, number or boolean, got {check.shown(value)}")


def _args(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    data = check.mapping(raw, where)
    out = {}
    for name, value in data.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: argument names are strings, got {check.shown(name)}")
        if name in ("record", "bag", "autostart", "summary_file"):
            raise ConfigError(f"{where}.{name}: set by the sweep for every run (each run records into its own folder)")
        out[name] = _arg_text(value, f"{where}.{name}")
    return out


def parse_path(text: Any, where: str, pattern: re.Pattern[str] = _PATH) -> ParamPath:
    if not isinstance(text, str) or not (m := pattern.match(text)):
        raise ConfigError(f"{where}: '{text}' is not a parameter path `node.parameter` (optionally `[index]`)")
    return ParamPath(m.group(1), m.group(2), None if m.group(3) is None else int(m.group(3)))


def distribution(raw: Any, where: str) -> Distribution:
    data = dict(check.mapping(raw, where))
    kind = check.choice(data.pop("distrib", None), DISTRIBUTIONS, f"{where}.distrib")
    if kind in ("uniform", "loguniform", "int"):
        check.no_unknown_keys(data, ["low", "high"], where)
        low = check.number(data.get("low"), f"{where}.low")
        high = check.number(data.get("high"), f"{where}.high")
        if not high > low:
            raise ConfigError(f"{where}: high ({high:g}) must be above low ({low:g})")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}.low: loguniform needs low > 0, got {low:g}")
        if kind == "int" and (low != math.floor(low) or high != math.floor(high)):
            raise ConfigError(f"{where}: int needs whole numbers, got {low:g} and {high:g}")
        return Distribution(kind, low=low, high=high)
    if kind == "normal":
        check.no_unknown_keys(data, ["mean", "std"], where)
        mean = check.number(data.get("mean"), f"{where}.mean")
        std = check.number(data.get("std"), f"{where}.std", 0.0)
        return Distribution(kind, mean=mean, std=std)
    check.no_unknown_keys(data, ["values"], where)
    values = data.get("values")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.values: choice needs a non-empty list, got {check.shown(values)}")
    return Distribution(kind, values=tuple(values))


def _draws(raw: Any, where: str, pattern: re.Pattern[str]) -> dict[ParamPath, Distribution]:
    if raw is None:
        return {}
    data = check.mapping(raw, where)
    return {parse_path(k, f"{where}: key", pattern): distribution(v, f"{where}.{k}") for k, v in data.items()}


def _seeds(raw: Any, where: str) -> list[int]:
    if isinstance(raw, list):
        seeds = [check.integer(s, f"{where}[{i}]", 0) for i, s in enumerate(raw)]
    else:
        data = check.mapping(raw, where)
        check.no_unknown_keys(data, ["first", "count"], where)
        first = check.integer(data.get("first", 0), f"{where}.first", 0)
        count = check.integer(data.get("count"), f"{where}.count", 1)
        seeds = list(range(first, first + count))
    if not seeds:
        raise ConfigError(f"{where}: no seeds")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: each seed once; repeated: {sorted({s for s in seeds if seeds.count(s) > 1})}")
    return seeds


def _variants(raw: Any, where: str) -> list[Variant]:
    if raw is None:
        return [Variant("default", {}, {})]
    data = check.mapping(raw, where)
    if not data:
        raise ConfigError(f"{where}: at least one variant")
    out = []
    for name, body in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: variant name '{name}' must start with a letter and hold letters, digits, _")
        spec = check.mapping(body or {}, f"{where}.{name}")
        check.no_unknown_keys(spec, ["args", "params"], f"{where}.{name}")
        params_raw = check.mapping(spec.get("params") or {}, f"{where}.{name}.params")
        params = {parse_path(k, f"{where}.{name}.params: key"): v for k, v in params_raw.items()}
        out.append(Variant(name, _args(spec.get("args"), f"{where}.{name}.args"), params))
    return out


def _search(raw: Any, where: str, variants: list[Variant]) -> Search | None:
    if raw is None:
        return None
    data = check.mapping(raw, where)
    keys = ["variant", "space", "metric", "statistic", "mode", "trials", "seed", "concurrency"]
    check.no_unknown_keys(data, keys, where)
    names = [v.name for v in variants]
    variant = check.text(data.get("variant", names[0]), f"{where}.variant")
    if variant not in names:
        raise ConfigError(f"{where}.variant: no variant '{variant}'; variants: {names}")
    space = _draws(data.get("space"), f"{where}.space", _PATH)
    if not space:
        raise ConfigError(f"{where}.space: at least one parameter range to search")
    return Search(
        variant=variant, space=space,
        metric=check.text(data.get("metric", "tracking_rmse"), f"{where}.metric"),
        statistic=check.choice(data.get("statistic", "cvar50"), STATISTICS, f"{where}.statistic"),
        mode=check.choice(data.get("mode", "min"), MODES, f"{where}.mode"),
        trials=check.integer(data.get("trials", 8), f"{where}.trials", 1),
        seed=check.integer(data.get("seed", 0), f"{where}.seed", 0),
        concurrency=check.integer(data.get("concurrency", 1), f"{where}.concurrency", 1),
    )


def _columns(raw: Any, where: str) -> list[Column]:
    if raw is None:
        return list(DEFAULT_COLUMNS)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: a non-empty list of {{metric, label, format}}, got {check.shown(raw)}")
    out = []
    for i, item in enumerate(raw):
        data = check.mapping(item, f"{where}[{i}]")
        check.no_unknown_keys(data, ["metric", "label", "format"], f"{where}[{i}]")
        metric = check.text(data.get("metric"), f"{where}[{i}].metric")
        fmt = str(data.get("format", ".4g"))
        try:
            format(1.0, fmt)
        except ValueError as exc:
            raise ConfigError(f"{where}[{i}].format: '{fmt}' is no Python format spec ({exc})") from exc
        out.append(Column(metric, str(data.get("label", metric)), fmt))
    return out


def _floats(raw: Any, where: str) -> list[float] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: a non-empty list of numbers, got {check.shown(raw)}")
    return [check.number(v, f"{where}[{i}]") for i, v in enumerate(raw)]


def find_file(text: str, base: Path, where: str) -> Path:
    """A path as written in a spec: absolute, else relative to the spec's folder, else to the current one,
    else to the repository root (the specs in config/sweeps/ name launch/... and config/...)."""
    path = Path(text)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [base / path, Path.cwd() / path, Path(__file__).resolve().parents[2] / path]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ConfigError(f"{where}: file '{text}' not found (looked in {', '.join(str(c.parent) for c in candidates)})")


def make_spec(data: Any, file: Path) -> SweepSpec:
    top = check.mapping(data, "top level")
    keys = ["name", "launch", "args", "seeds", "variants", "randomize", "resources", "timeout", "metrics",
            "search", "table"]
    check.no_unknown_keys(top, keys, "top level")
    launch = find_file(check.text(top.get("launch"), "launch"), file.parent, "launch")
    variants = _variants(top.get("variants"), "variants")
    rand = check.mapping(top.get("randomize") or {}, "randomize")
    check.no_unknown_keys(rand, ["params", "init", "disturbances", "disturbance_seed"], "randomize")
    init = _floats(rand.get("init"), "randomize.init")
    if init is not None and any(v < 0 for v in init):
        raise ConfigError(f"randomize.init: half-widths must be >= 0, got {init}")
    resources = check.mapping(top.get("resources") or {}, "resources")
    check.no_unknown_keys(resources, ["cpus_per_run"], "resources")
    metrics = check.mapping(top.get("metrics") or {}, "metrics")
    check.no_unknown_keys(metrics, ["Q", "R"], "metrics")
    return SweepSpec(
        name=check.text(top.get("name", file.stem), "name"),
        file=file,
        launch=launch,
        args=_args(top.get("args"), "args"),
        seeds=_seeds(top.get("seeds", [0]), "seeds"),
        variants=variants,
        params_draws=_draws(rand.get("params"), "randomize.params", _PATH),
        init_spread=init,
        disturbance_draws=_draws(rand.get("disturbances"), "randomize.disturbances", _DIST_PATH),
        disturbance_seed=check.flag(rand.get("disturbance_seed", True), "randomize.disturbance_seed"),
        cpus_per_run=check.number(resources.get("cpus_per_run", 1.0), "resources.cpus_per_run", 0.0, low_open=True),
        timeout=check.number(top.get("timeout", 600.0), "timeout", 0.0, low_open=True),
        cost_q=_floats(metrics.get("Q"), "metrics.Q"),
        cost_r=_floats(metrics.get("R"), "metrics.R"),
        search=_search(top.get("search"), "search", variants),
        columns=_columns(top.get("table"), "table"),
    )


def load_spec(path: str | Path) -> SweepSpec:
    file = Path(path).resolve()
    data = read_yaml(file, "sweep spec")
    try:
        return make_spec({} if data is None else data, file)
    except ConfigError as exc:
        raise ConfigError(f"sweep spec '{path}': {exc}") from exc
