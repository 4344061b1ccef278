"""Parse a ROS 2 XML launch file into a list of `NodeSpec`.

Supported, with ROS 2 launch's meaning: <launch>, <arg>, <let>, <node> (with <param>, <remap>,
<env>), <group> (scoped, with <push-ros-namespace>), <set-env>, <include> (with <arg>), the `if` and
`unless` attributes, and the substitutions $(var), $(env), $(find-pkg-share), $(dirname). Anything
else raises LaunchFileError naming the file and the element, so nothing is silently ignored.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safe_ctrl_ros.errors import ConfigError


class LaunchFileError(ConfigError):
    """A launch file uses something this runner does not support, or is inconsistent."""


@dataclass
class NodeSpec:
    pkg: str
    exec: str
    name: str | None = None
    namespace: str = ""
    params_files: list[str] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    remaps: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    on_exit_shutdown: bool = False
    respawn: bool = False
    respawn_delay: float = 0.0
    output: str = "screen"

    @property
    def label(self) -> str:
        return self.name or self.exec

    def inline_params(self) -> dict[str, Any]:
        """The <param name value> entries as a params-file body, values typed as ROS 2 launch does
        (each value read as YAML, an empty value as the empty string)."""
        params: dict[str, Any] = {}
        for key, text in self.params:
            value = yaml.safe_load(text) if text.strip() else ""
            node = params
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return {"/**": {"ros__parameters": params}}

    def ros_args(self, inline_params_file: str | None = None) -> list[str]:
        """The --ros-args part of the node's command line, in ROS 2 launch's order: params files,
        then the inline params (which launch also passes as a params file), then remaps."""
        out = ["--ros-args"]
        if self.name:
            out += ["-r", f"__node:={self.name}"]
        if self.namespace:
            out += ["-r", f"__ns:={self.namespace}"]
        for path in self.params_files:
            out += ["--params-file", path]
        if self.params:
            if inline_params_file is None:
                raise ValueError("inline params need a file to be passed in")
            out += ["--params-file", inline_params_file]
        for src, dst in self.remaps:
            out += ["-r", f"{src}:={dst}"]
        return out

    def write_inline_params(self, directory: Path, index: int) -> str | None:
        if not self.params:
            return None
        path = directory / f"{index:02d}_{self.label}_params.yaml"
        path.write_text(yaml.safe_dump(self.inline_params(), sort_keys=False))
        return str(path)


@dataclass
class _Scope:
    variables: dict[str, str]
    namespace: str
    env: dict[str, str]


_SUBST = re.compile(r"\$\(([^()]*)\)")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

_ATTRS: dict[str, set[str]] = {
    "launch": {"version"},
    "arg": {"name", "default", "description", "if", "unless"},
    "let": {"name", "value", "if", "unless"},
    "node": {
        "pkg", "exec", "name", "namespace", "args", "output", "on_exit", "respawn", "respawn_delay",
        "if", "unless", "ros_args",
    },
    "param": {"name", "value", "from", "if", "unless"},
    "remap": {"from", "to", "if", "unless"},
    "env": {"name", "value", "if", "unless"},
    "group": {"scoped", "if", "unless"},
    "push-ros-namespace": {"namespace", "if", "unless"},
    "set-env": {"name", "value", "if", "unless"},
    "include": {"file", "if", "unless"},
}
_ALIASES = {"push_ros_namespace": "push-ros-namespace", "set_env": "set-env"}


def find_package_share(pkg: str) -> Path:
    """`<prefix>/share/<pkg>` for the first prefix in AMENT_PREFIX_PATH that registers `pkg`."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / pkg
        if marker.exists():
            return Path(prefix) / "share" / pkg
    raise LaunchFileError(
        f"package '{pkg}' not found in AMENT_PREFIX_PATH (build it and source install/setup.bash)"
    )


def find_executable(pkg: str, exe: str) -> Path:
    """`<prefix>/lib/<pkg>/<exe>`, as `ros2 run` resolves it."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        path = Path(prefix) / "lib" / pkg / exe
        if path.is_file():
            if not os.access(path, os.X_OK):
                raise LaunchFileError(f"'{path}' exists but is not executable")
            return path
    raise LaunchFileError(f"executable '{exe}' of package '{pkg}' not found in AMENT_PREFIX_PATH")


class _Parser:
    def __init__(self) -> None:
        self.nodes: list[NodeSpec] = []
        self.declared: dict[str, str | None] = {}

    # --- substitutions -------------------------------------------------------------------
    def subst(self, text: str, scope: _Scope, where: str, path: Path) -> str:
        def repl(m: re.Match[str]) -> str:
            parts = m.group(1).split()
            if not parts:
                raise LaunchFileError(f"{path}: {where}: empty substitution '$()'")
            kind, rest = parts[0], parts[1:]
            if kind == "var" and len(rest) == 1:
                if rest[0] not in scope.variables:
                    raise LaunchFileError(f"{path}: {where}: undefined launch argument '{rest[0]}'")
                return scope.variables[rest[0]]
            if kind == "env" and len(rest) in (1, 2):
                value = scope.env.get(rest[0], os.environ.get(rest[0]))
                if value is None:
                    if len(rest) == 2:
                        return rest[1]
                    raise LaunchFileError(f"{path}: {where}: environment variable '{rest[0]}' is not set")
                return value
            if kind == "find-pkg-share" and len(rest) == 1:
                return str(find_package_share(rest[0]))
            if kind == "dirname" and not rest:
                return str(path.parent)
            raise LaunchFileError(f"{path}: {where}: unsupported substitution '$({m.group(1)})'")

        return _SUBST.sub(repl, text)

    def attr(self, el: ET.Element, name: str, scope: _Scope, path: Path, default: str | None = None) -> str | None:
        raw = el.get(name)
        if raw is None:
            return default
        return self.subst(raw, scope, f"<{el.tag} {name}=...>", path)

    def required(self, el: ET.Element, name: str, scope: _Scope, path: Path) -> str:
        value = self.attr(el, name, scope, path)
        if value is None:
            raise LaunchFileError(f"{path}: <{el.tag}> needs the attribute '{name}'")
        return value

    def boolean(self, text: str, what: str, path: Path) -> bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise LaunchFileError(f"{path}: {what}: expected true or false, got '{text}'")

    def enabled(self, el: ET.Element, scope: _Scope, path: Path) -> bool:
        cond_if = self.attr(el, "if", scope, path)
        cond_unless = self.attr(el, "unless", scope, path)
        if cond_if is not None and not self.boolean(cond_if, f"<{el.tag} if=...>", path):
            return False
        return not (cond_unless is not None and self.boolean(cond_unless, f"<{el.tag} unless=...>", path))

    def check_attrs(self, el: ET.Element, path: Path) -> str:
        tag = _ALIASES.get(el.tag, el.tag)
        if tag not in _ATTRS:
            raise LaunchFileError(f"{path}: unsupported element <{el.tag}> (supported: {sorted(_ATTRS)})")
        unknown = sorted(set(el.attrib) - _ATTRS[tag])
        if unknown:
            raise LaunchFileError(f"{path}: <{el.tag}>: unsupported attribute(s) {unknown}")
        return tag

    # --- elements ------------------------------------------------------------------------
    def parse_file(self, path: Path, scope: _Scope, cli_args: Mapping[str, str], top: bool) -> None:
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            raise LaunchFileError(f"launch file '{path}' does not exist") from None
        except ET.ParseError as exc:
            raise LaunchFileError(f"launch file '{path}' is not valid XML: {exc}") from exc
        if root.tag != "launch":
            raise LaunchFileError(f"{path}: the root element must be <launch>, got <{root.tag}>")
        self.check_attrs(root, path)
        declared: set[str] = set()
        self.children(root, path, scope, cli_args, declared)
        if top:
            unknown = sorted(set(cli_args) - declared)
            if unknown:
                raise LaunchFileError(f"{path}: unknown launch argument(s) {unknown}; declared: {sorted(declared)}")

    def children(
        self, parent: ET.Element, path: Path, scope: _Scope, cli_args: Mapping[str, str], declared: set[str]
    ) -> None:
        for el in parent:
            if not isinstance(el.tag, str):  # comments, processing instructions
                continue
            tag = self.check_attrs(el, path)
            if not self.enabled(el, scope, path):
                continue
            if tag == "arg":
                name = self.required(el, "name", scope, path)
                declared.add(name)
                if name in cli_args:
                    scope.variables[name] = cli_args[name]
                elif name not in scope.variables:
                    default = self.attr(el, "default", scope, path)
                    if default is None:
                        raise LaunchFileError(f"{path}: launch argument '{name}' has no default and was not given")
                    scope.variables[name] = default
                self.declared.setdefault(name, el.get("description"))
            elif tag == "let":
                scope.variables[self.required(el, "name", scope, path)] = self.required(el, "value", scope, path)
            elif tag == "set-env":
                scope.env[self.required(el, "name", scope, path)] = self.required(el, "value", scope, path)
            elif tag == "push-ros-namespace":
                scope.namespace = _join_ns(scope.namespace, self.required(el, "namespace", scope, path))
            elif tag == "group":
                scoped = self.boolean(self.attr(el, "scoped", scope, path, "true") or "true", "<group scoped>", path)
                inner = _Scope(dict(scope.variables), scope.namespace, dict(scope.env)) if scoped else scope
                self.children(el, path, inner, cli_args, declared)
            elif tag == "include":
                self.include(el, path, scope)
            elif tag == "node":
                self.nodes.append(self.node(el, path, scope))
            else:
                raise LaunchFileError(f"{path}: <{el.tag}> is only valid inside <node> or <include>")

    def include(self, el: ET.Element, path: Path, scope: _Scope) -> None:
        file = Path(self.required(el, "file", scope, path))
        if not file.is_absolute():
            file = path.parent / file
        inner = _Scope(dict(scope.variables), scope.namespace, dict(scope.env))
        given: dict[str, str] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if child.tag != "arg" or set(child.attrib) - {"name", "value"}:
                raise LaunchFileError(f"{path}: <include> may only hold <arg name=... value=...>, got <{child.tag}>")
            given[self.required(child, "name", scope, path)] = self.required(child, "value", scope, path)
        inner.variables.update(given)
        self.parse_file(file, inner, given, top=False)

    def node(self, el: ET.Element, path: Path, scope: _Scope) -> NodeSpec:
        ns = _join_ns(scope.namespace, self.attr(el, "namespace", scope, path, "") or "")
        on_exit = self.attr(el, "on_exit", scope, path)
        if on_exit not in (None, "shutdown"):
            raise LaunchFileError(f"{path}: <node on_exit='{on_exit}'>: only 'shutdown' is supported")
        spec = NodeSpec(
            pkg=self.required(el, "pkg", scope, path),
            exec=self.required(el, "exec", scope, path),
            name=self.attr(el, "name", scope, path),
            namespace=ns,
            args=(self.attr(el, "args", scope, path) or "").split(),
            env=dict(scope.env),
            on_exit_shutdown=on_exit == "shutdown",
            respawn=self.boolean(self.attr(el, "respawn", scope, path, "false") or "false", "<node respawn>", path),
            respawn_delay=float(self.attr(el, "respawn_delay", scope, path, "0") or 0),
            output=self.attr(el, "output", scope, path, "screen") or "screen",
        )
        if el.get("ros_args") is not None:
            raise LaunchFileError(f"{path}: <node ros_args=...> is not supported; use <param> and <remap>")
        for child in el:
            if not isinstance(child.tag, str):
                continue
            tag = self.check_attrs(child, path)
            if not self.enabled(child, scope, path):
                continue
            if tag == "param":
                self.param(child, path, scope, spec, prefix="")
            elif tag == "remap":
                spec.remaps.append(
                    (self.required(child, "from", scope, path), self.required(child, "to", scope, path))
                )
            elif tag == "env":
                spec.env[self.required(child, "name", scope, path)] = self.required(child, "value", scope, path)
            else:
                raise LaunchFileError(f"{path}: <{child.tag}> is not supported inside <node>")
        return spec

    def param(self, el: ET.Element, path: Path, scope: _Scope, spec: NodeSpec, prefix: str) -> None:
        source = self.attr(el, "from", scope, path)
        if source is not None:
            if prefix or el.get("name") is not None:
                raise LaunchFileError(f"{path}: <param from=...> takes no name and cannot be nested")
            file = Path(source)
            if not file.is_absolute():
                file = path.parent / file
            if not file.is_file():
                raise LaunchFileError(f"{path}: params file '{file}' does not exist")
            spec.params_files.append(str(file))
            return
        name = prefix + self.required(el, "name", scope, path)
        nested = [c for c in el if isinstance(c.tag, str)]
        value = self.attr(el, "value", scope, path)
        if nested:
            if value is not None:
                raise LaunchFileError(f"{path}: <param name='{name}'> has both a value and nested params")
            for child in nested:
                if self.check_attrs(child, path) != "param":
                    raise LaunchFileError(f"{path}: only <param> may be nested in <param name='{name}'>")
                if self.enabled(child, scope, path):
                    self.param(child, path, scope, spec, prefix=name + ".")
            return
        if value is None:
            raise LaunchFileError(f"{path}: <param name='{name}'> needs a value")
        spec.params.append((name, value))


def _join_ns(base: str, ns: str) -> str:
    if ns.startswith("/"):
        joined = ns
    else:
        joined = "/".join(p for p in (base.strip("/"), ns.strip("/")) if p)
        joined = "/" + joined if joined else ""
    return joined.rstrip("/") if joined != "/" else ""


@dataclass
class LaunchPlan:
    file: Path
    nodes: list[NodeSpec]
    arguments: dict[str, str]
    descriptions: dict[str, str | None]


def parse_launch_file(path: str | Path, cli_args: Mapping[str, str] | None = None) -> LaunchPlan:
    """The nodes a launch file starts, with every substitution resolved."""
    file = Path(path).resolve()
    parser = _Parser()
    scope = _Scope(variables={}, namespace="", env={})
    parser.parse_file(file, scope, dict(cli_args or {}), top=True)
    if not parser.nodes:
        raise LaunchFileError(f"{file}: the launch file starts no node")
    return LaunchPlan(file, parser.nodes, dict(scope.variables), parser.declared)
