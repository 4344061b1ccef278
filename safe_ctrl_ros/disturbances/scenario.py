"""A disturbance scenario: named disturbances with targets, schedules and their own generators.

    seed: 42
    disturbances:
      - name: gust
        target: force            # observation | action | force | parameter | state_link | command_link
        kind: impulse            # impulse | step | uniform | white_noise | periodic
        start: 2.0               # s
        duration: 0.2            # s
        magnitude: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        mask: [1, 0, 1, 0, 0, 0]
      - name: heavier
        target: parameter
        parameter: mass          # a plant model parameter
        scale: 1.3               # or value: 0.035
        start: 5.0
        duration: 0.0            # 0: until the end; > 0: restored afterwards

Each disturbance draws from its own generator, seeded from the scenario seed and its name, so
adding or removing one disturbance never changes another's draws. Force disturbances are world-frame
wrenches [fx, fy, fz, tx, ty, tz]. Communication faults (delay, drop) on the state and command
links are in safe_ctrl_ros.disturbances.link.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros import config_check as check
from safe_ctrl_ros.disturbances.kinds import Signal, make_signal
from safe_ctrl_ros.disturbances.link import LINK_TARGETS, LinkFault, make_link_fault
from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray

TARGETS = ("observation", "action", "force", "parameter", *LINK_TARGETS)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def generator_for(seed: int, name: str) -> np.random.Generator:
    """The generator of disturbance `name`: independent of every other disturbance's."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())]))


@dataclass
class ParameterChange:
    parameter: str
    start: float
    duration: float
    value: float | None
    scale: float | None

    def target_value(self, nominal: float) -> float:
        return self.value if self.value is not None else nominal * float(self.scale)  # type: ignore[arg-type]

    def active(self, t: float) -> bool:
        end = self.start + self.duration if self.duration > 0 else math.inf
        return self.start - 1e-9 <= t < end - 1e-9


@dataclass
class Disturbance:
    name: str
    target: str
    signal: Signal | None = None
    change: ParameterChange | None = None
    enabled: bool = True
    link: LinkFault | None = None

    @property
    def kind(self) -> str:
        if self.signal is not None:
            return self.signal.kind
        return self.link.kind if self.link is not None else "parameter_change"

    def active(self, t: float) -> bool:
        if not self.enabled:
            return False
        if self.signal is not None:
            return self.signal.active(t)
        return self.link.active(t) if self.link is not None else self.change.active(t)  # type: ignore[union-attr]


class Scenario:
    """All disturbances of a run. `observation(t, x)`, `action(t, u)`, `force(t)` give the disturbed
    values; `parameters(t, nominal)` the plant parameter values in force at t."""

    def __init__(self, disturbances: list[Disturbance], seed: int) -> None:
        names = [d.name for d in disturbances]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"disturbances: each name must be unique; repeated: {dupes}")
        self.disturbances = disturbances
        self.seed = seed

    def by_target(self, target: str) -> list[Disturbance]:
        return [d for d in self.disturbances if d.target == target]

    def _sum(self, target: str, t: float, dim: int) -> FloatArray:
        total = np.zeros(dim)
        for d in self.by_target(target):
            if d.enabled and d.signal is not None:
                total = total + d.signal.value(t)
        return total

    def observation(self, t: float, x: FloatArray) -> FloatArray:
        if not any(d.active(t) for d in self.by_target("observation")):
            return x  # bit-identical pass-through when nothing acts
        out: FloatArray = x + self._sum("observation", t, x.size)
        return out

    def action(self, t: float, u: FloatArray) -> FloatArray:
        if not any(d.active(t) for d in self.by_target("action")):
            return u
        out: FloatArray = u + self._sum("action", t, u.size)
        return out

    def force(self, t: float) -> FloatArray:
        return self._sum("force", t, WRENCH_SIZE)

    def parameters(self, t: float, nominal: dict[str, float]) -> dict[str, float]:
        values = dict(nominal)
        for d in self.by_target("parameter"):
            if d.active(t) and d.change is not None:
                values[d.change.parameter] = d.change.target_value(nominal[d.change.parameter])
        return values

    def link(self, target: str, t: float) -> tuple[bool, float]:
        """The fate of one message on link `target` at time t: (dropped, delay in s of wall time).
        Every active fault draws, so each fault's sequence depends only on the messages it saw."""
        dropped, delay = False, 0.0
        for d in self.by_target(target):
            if d.link is not None and d.active(t):
                lost, wait = d.link.draw()
                dropped, delay = dropped or lost, delay + wait
        return dropped, delay

    def get(self, name: str) -> Disturbance:
        for d in self.disturbances:
            if d.name == name:
                return d
        raise ConfigError(f"no disturbance named '{name}'; known: {[d.name for d in self.disturbances]}")


def make_scenario(
    data: Any, nx: int, nu: int, dt: float, param_names: list[str] | None = None,
    seed_override: int | None = None,
) -> Scenario:
    """A scenario from its mapping; errors name the key path (`disturbances[1].magnitude`)."""
    top = check.mapping(data, "top level")
    check.no_unknown_keys(top, ["seed", "disturbances"], "top level")
    seed = check.integer(top.get("seed", 0), "seed") if seed_override is None else int(seed_override)
    items = top.get("disturbances")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ConfigError(f"disturbances: expected a list of mappings, got {check.shown(items)}")
    out = []
    for i, raw in enumerate(items):
        where = f"disturbances[{i}]"
        spec = check.mapping(raw, where)
        name = check.text(spec.pop("name", f"disturbance_{i}"), f"{where}.name")
        if not _NAME.match(name):
            raise ConfigError(
                f"{where}.name: '{name}' must start with a letter and hold only letters, digits, _"
            )
        target = check.choice(spec.pop("target", None), TARGETS, f"{where}.target")
        enabled = check.flag(spec.pop("enabled", True), f"{where}.enabled")
        if target == "parameter":
            change = _parameter_change(where, spec, param_names)
            out.append(Disturbance(name, target, change=change, enabled=enabled))
            continue
        if target in LINK_TARGETS:
            link = make_link_fault(where, spec, generator_for(seed, name))
            out.append(Disturbance(name, target, enabled=enabled, link=link))
            continue
        dim = {"observation": nx, "action": nu, "force": WRENCH_SIZE}[target]
        signal = make_signal(where, spec, dim, generator_for(seed, name), dt)
        out.append(Disturbance(name, target, signal=signal, enabled=enabled))
    return Scenario(out, seed)


def _parameter_change(where: str, spec: dict[str, Any], param_names: list[str] | None) -> ParameterChange:
    known = ["name", "target", "enabled", "parameter", "value", "scale", "start", "duration"]
    check.no_unknown_keys(spec, known, f"{where} (a parameter change)")
    parameter = check.text(spec.pop("parameter", None), f"{where}.parameter")
    if param_names is not None and parameter not in param_names:
        raise ConfigError(f"{where}.parameter: unknown plant parameter '{parameter}'; known: {sorted(param_names)}")
    value = spec.pop("value", None)
    scale = spec.pop("scale", None)
    if (value is None) == (scale is None):
        raise ConfigError(f"{where}: give exactly one of 'value' and 'scale'")
    start = check.number(spec.pop("start", 0.0), f"{where}.start", 0.0)
    duration = check.number(spec.pop("duration", 0.0), f"{where}.duration", 0.0)
    return ParameterChange(
        parameter, start, duration,
        None if value is None else check.number(value, f"{where}.value", 0.0, low_open=True),
        None if scale is None else check.number(scale, f"{where}.scale", 0.0, low_open=True),
    )


def load_scenario(
    path: str | Path, nx: int, nu: int, dt: float, param_names: list[str] | None = None,
    seed_override: int | None = None,
) -> Scenario:
    file = Path(path)
    data = read_yaml(file, "disturbance scenario")
    try:
        return make_scenario({} if data is None else data, nx, nu, dt, param_names, seed_override)
    except ConfigError as exc:
        raise ConfigError(f"disturbance scenario '{file}': {exc}") from exc
