"""Per-run draws from the run's seed, and how they are written into a params file and a scenario.

Every draw has a stream of its own, seeded from the run's seed and the draw's name
(`stream(seed, name)`), so a run's draws depend on its seed alone: not on the variant (the variants
of one seed see the same vehicle, start and gusts, so they compare paired), not on the other draws
(adding one leaves the others as they were), not on which machine or in which order it runs.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.sweep.spec import Distribution, ParamPath


def _seq(seed: int, name: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def stream(seed: int, name: str) -> np.random.Generator:
    """The generator of draw `name` in the run with `seed`."""
    return np.random.default_rng(_seq(seed, name))


def derived_seed(seed: int, name: str) -> int:
    """A seed for a component (`plant`, `disturbances`) of the run with `seed`: in [0, 2**31)."""
    return int(_seq(seed, name).generate_state(1)[0]) & 0x7FFFFFFF


def sample(dist: Distribution, rng: np.random.Generator) -> Any:
    """One value of `dist` (a Python float, int or one of the choice's values)."""
    if dist.kind == "uniform":
        return float(rng.uniform(dist.low, dist.high))
    if dist.kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    if dist.kind == "normal":
        return float(rng.normal(dist.mean, dist.std))
    if dist.kind == "int":
        return int(rng.integers(int(dist.low), int(dist.high) + 1))
    return dist.values[int(rng.integers(len(dist.values)))]


def draw_all(seed: int, draws: Mapping[ParamPath, Distribution], prefix: str) -> dict[ParamPath, Any]:
    """Each draw from its own stream (`prefix:path`)."""
    return {path: sample(dist, stream(seed, f"{prefix}:{path}")) for path, dist in draws.items()}


def _node_matches(key: str, node: str) -> bool:
    """Whether a params-file section key applies to node `node` (no namespace): `node`, `/node`,
    `/**/node`, `/**`, `/**/*` (the forms these files use)."""
    return key in (node, f"/{node}", f"/**/{node}", "/**", "/**/*")


def _get(params: Mapping[str, Any], name: str) -> Any:
    if name in params:
        return params[name]
    node: Any = params
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(name)
        node = node[part]
    return node


def _set(params: dict[str, Any], name: str, value: Any) -> None:
    if name in params:  # written flat (`model.mass: 1.0`)
        params[name] = value
        return
    node = params
    *parents, leaf = name.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"parameter '{name}': '{part}' is a value in the params file, not a group")
        node = child
    node[leaf] = value


def params_value(data: Mapping[str, Any], node: str, name: str) -> Any:
    """The value of `node`'s parameter `name` in a params-file body (the last matching section wins);
    KeyError if no section sets it."""
    found: list[Any] = []
    for key, section in data.items():
        if isinstance(section, Mapping) and _node_matches(str(key), node):
            try:
                found.append(_get(section.get("ros__parameters") or {}, name))
            except KeyError:
                continue
    if not found:
        raise KeyError(name)
    return found[-1]


def apply_params(data: Mapping[str, Any], overlay: Mapping[ParamPath, Any], where: str) -> dict[str, Any]:
    """A params-file body with `overlay` written in: into the node's own sections (`/**/plant`), a new
    `/**/<node>` section if it has none. An `[i]` path changes one entry of the array in force."""
    out = copy.deepcopy(dict(data))
    for path, value in overlay.items():
        new_value = value
        if path.index is not None:
            try:
                current = params_value(out, path.node, path.name)
            except KeyError:
                raise ConfigError(f"{where}: {path}: the params file sets no '{path.name}' for node "
                                  f"'{path.node}' (an [index] changes an array the file gives; "
                                  f"give the whole array instead)") from None
            if not isinstance(current, list) or path.index >= len(current):
                raise ConfigError(f"{where}: {path}: '{path.name}' is {current!r}, which has no entry {path.index}")
            new_value = list(current)
            new_value[path.index] = value
        sections = [k for k, s in out.items() if isinstance(s, Mapping) and _node_matches(str(k), path.node)
                    and str(k).endswith(path.node)]
        if not sections:
            out[f"/**/{path.node}"] = {"ros__parameters": {}}
            sections = [f"/**/{path.node}"]
        for key in sections:
            section = out[key].setdefault("ros__parameters", {})
            _set(section, path.name, new_value)
    return out


def apply_scenario(data: Mapping[str, Any], changes: Mapping[ParamPath, Any], seed: int | None,
                   where: str) -> dict[str, Any]:
    """A disturbance scenario with fields of named disturbances changed (`gust_1.start`) and its seed."""
    out = copy.deepcopy(dict(data))
    items = out.get("disturbances") or []
    by_name = {str(d.get("name")): d for d in items if isinstance(d, dict)}
    for path, value in changes.items():
        if path.node not in by_name:
            raise ConfigError(f"{where}: {path}: the scenario has no disturbance '{path.node}'; "
                              f"it has {sorted(by_name)}")
        entry = by_name[path.node]
        if path.index is None:
            entry[path.name] = value
            continue
        current = entry.get(path.name)
        if not isinstance(current, list) or path.index >= len(current):
            raise ConfigError(f"{where}: {path}: '{path.name}' of '{path.node}' is {current!r}, "
                              f"which has no entry {path.index}")
        current[path.index] = value
    if seed is not None:
        out["seed"] = int(seed)
    return out
