"""Parse a ROS 2 XML launch file into a list of `NodeSpec`, exactly as strictly as `ros2 launch`.

`LAUNCH_XML` below is the one table of what the upstream XML frontend (launch_xml, launch 3.7 and
launch_ros 0.28: Kilted, Rolling late 2024) accepts: every action tag, and per tag the attributes
and nested tags its `parse` method reads. Upstream rejects anything else ("Unrecognized entity of
the type: set-env", "Unexpected attribute(s) found in `node`: {...}"), and so does this parser, with
the same words plus the file and line. Of what upstream accepts, safe-ctrl-bringup implements a
subset (the `supported` column); the rest is an error that says ros2 launch would accept it, so
nothing is silently ignored, and what `ros2 launch` rejects is rejected here too.

Implemented, with ROS 2 launch's meaning: <launch>, <arg> (with <choice>), <let>, <node> (with
<param>, <remap>, <env>), <group scoped>, <push-ros-namespace>, <set_env>, <unset_env>, <include>
(with <arg>); `if`/`unless` on every action; the substitutions $(var), $(env), $(find-pkg-share),
$(dirname).
"""

from __future__ import annotations

import os
import re
import shlex
import xml.parsers.expat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safe_ctrl_ros.errors import ConfigError


class LaunchFileError(ConfigError):
    """A launch file uses something this runner does not support, or is inconsistent."""


# --- What the upstream XML frontend accepts (the one table) --------------------------------------------


@dataclass(frozen=True)
class Entity:
    """One tag as launch_xml parses it: the attributes and nested tags its parser reads (`attrs`,
    `children`; anything else is upstream's "Unexpected attribute(s)/nested tag(s)" error), whether it
    holds actions (<launch>, <group>), and the part safe-ctrl-bringup implements."""

    attrs: frozenset[str]
    supported: frozenset[str]
    children: dict[str, Entity] = field(default_factory=dict)
    holds_actions: bool = False
    implemented: bool = True

    def __post_init__(self) -> None:
        if not self.supported <= self.attrs:  # bringup never accepts more than launch_xml
            raise AssertionError(f"supported attributes {sorted(self.supported - self.attrs)} not in launch_xml's")


def _words(text: str) -> list[str]:
    return text.split()


def _e(attrs: str, supported: str | None = None, **kwargs: Any) -> Entity:
    a = frozenset(attrs.split())
    return Entity(a, a if supported is None else frozenset(supported.split()), **kwargs)


_COND = "if unless"  # Action.parse: every action (never a nested entity such as <param> or <remap>)
# ExecuteProcess.parse (node reads all of it but `cmd`); `env` is a nested tag and takes no condition.
_EXECUTABLE = "cwd name on_exit launch-prefix output respawn respawn_max_retries respawn_delay sigterm_timeout " \
              "sigkill_timeout shell emulate_tty"
_NAME_VALUE = _e("name value")

# <param> nested in <param name=...>: name, value (+ `type`; `value-sep` splits a list), nested <param>.
_PARAM_NESTED = _e("name value type value-sep", "name value")
_PARAM_NESTED.children["param"] = _PARAM_NESTED
# <param> in <node>: as nested, or `from` a file (+ allow_substs). Node.parse_nested_parameters.
_PARAM = _e("name value type value-sep from allow_substs", "name value from", children={"param": _PARAM_NESTED})

_NOT_IMPLEMENTED = Entity(frozenset(), frozenset(), implemented=False)

LAUNCH_XML: dict[str, Entity] = {
    # launch.actions
    "arg": _e(f"{_COND} name default description", children={"choice": _e("value")}),
    "let": _e(f"{_COND} name value"),
    "group": _e(f"{_COND} scoped forwarding", f"{_COND} scoped",
                children={"keep": _e("name value", "", implemented=False)}, holds_actions=True),
    "include": _e(f"{_COND} file", children={"arg": _NAME_VALUE}),
    "set_env": _e(f"{_COND} name value"),
    "unset_env": _e(f"{_COND} name"),
    # launch_ros.actions.Node: ExecuteProcess's attributes (less cmd) and its own
    "node": _e(
        f"{_COND} {_EXECUTABLE} pkg exec namespace exec_name args ros_args",
        f"{_COND} name pkg exec namespace args ros_args output on_exit respawn respawn_delay",
        children={"param": _PARAM, "remap": _e("from to"), "env": _NAME_VALUE},
    ),
    "push-ros-namespace": _e(f"{_COND} namespace"),
    "push_ros_namespace": _e(f"{_COND} namespace"),
    # accepted by ros2 launch, not implemented here
    **dict.fromkeys(
        _words("executable append_env reset_env set_parameter set_parameters_from_file set_remap set_use_sim_time "
               "set_ros_log_dir log timer ros_timer shutdown reset node_container load_composable_node "
               "lifecycle_node for"),
        _NOT_IMPLEMENTED,
    ),
}
# The root: Parser.parse_description reads only `deprecated` and checks no attribute of <launch>;
# `version` is the conventional one. Other attributes upstream ignores are refused here.
LAUNCH_ROOT = _e("version deprecated", holds_actions=True)

SUBSTITUTIONS = frozenset(
    _words("var env find-pkg-share find-pkg-prefix find-exec exec-in-pkg dirname filename file-content command eval "
           "anon not and or any all equals not-equals if param log_dir launch_log_dir test")
)
SUPPORTED_SUBSTITUTIONS = frozenset({"var", "env", "find-pkg-share", "dirname"})
# Tags people write that do not exist, and the one they mean (upstream says only "Unrecognized entity").
_MEANT = {
    "set-env": "<set_env>",
    "unset-env": "<unset_env>",
    "setenv": "<set_env>",
    "param": "<set_parameter>, or <param> inside <node>",
    "remap": "<set_remap>, or <remap> inside <node>",
    "env": "<set_env>, or <env> inside <node>",
}


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
    ros_arguments: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)
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
        """The ROS part of the node's command line, in ROS 2 launch's order: the `ros_args`
        attribute's own --ros-args, then name, namespace, params files, the inline params (which
        launch also passes as a params file), then remaps."""
        out = ["--ros-args", *self.ros_arguments] if self.ros_arguments else []
        out.append("--ros-args")
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
    env: dict[str, str | None]  # None: unset by <unset_env>


@dataclass
class _El:
    """An XML element with the line it starts on (ElementTree keeps no line numbers)."""

    tag: str
    attrib: dict[str, str]
    line: int
    children: list[_El] = field(default_factory=list)
    text: str = ""


def read_xml(path: Path) -> _El:
    """The file's root element; LaunchFileError if it is missing or not well-formed XML."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LaunchFileError(f"launch file '{path}' does not exist") from None
    except OSError as exc:
        raise LaunchFileError(f"launch file '{path}' cannot be read: {exc}") from exc
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_El] = []
    roots: list[_El] = []

    def start(tag: str, attrib: dict[str, str]) -> None:
        el = _El(tag, attrib, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(el)
        stack.append(el)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise LaunchFileError(f"launch file '{path}' is not valid XML: {exc}") from exc
    return roots[0]


_TRUE = {"true", "1"}  # launch.conditions.evaluate_condition_expression: these, stripped, any case
_FALSE = {"false", "0"}
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _unescape(text: str) -> str:
    """launch.frontend's replace_escaped_characters: a backslash takes the next character literally."""
    return re.sub(r"\\(.)", r"\1", text)


def _yaml_bool(text: str) -> bool | None:
    """A boolean as launch coerces one (YAML rules: true/false/yes/no/on/off, any case), else None."""
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return None
    return value if isinstance(value, bool) else None


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


def _set_repr(names: set[str]) -> str:
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


class _Parser:
    def __init__(self) -> None:
        self.nodes: list[NodeSpec] = []
        self.declared: dict[str, str | None] = {}
        self.warnings: list[str] = []

    # --- validation against LAUNCH_XML ----------------------------------------------------------
    def fail(self, path: Path, el: _El, message: str) -> LaunchFileError:
        return LaunchFileError(f"{path}:{el.line}: {message}")

    def action_spec(self, el: _El, path: Path) -> Entity:
        spec = LAUNCH_XML.get(el.tag)
        if spec is None:
            hint = f" (the tag is {_MEANT[el.tag]})" if el.tag in _MEANT else ""
            raise self.fail(path, el, f"Unrecognized entity of the type: {el.tag}{hint}")
        if not spec.implemented:
            raise self.fail(path, el, f"<{el.tag}> is a launch_xml action that ros2 launch runs but "
                                      "safe-ctrl-bringup does not implement")
        return spec

    def check(self, el: _El, spec: Entity, path: Path, nested_ok: set[str] | None = None) -> None:
        """Attributes and nested tags of `el` against its entry in LAUNCH_XML."""
        unknown = set(el.attrib) - spec.attrs
        if unknown:
            raise self.fail(path, el, f"Unexpected attribute(s) found in `{el.tag}`: {_set_repr(unknown)}")
        unsupported = set(el.attrib) - spec.supported
        if unsupported:
            raise self.fail(path, el, f"<{el.tag}>: attribute(s) {_set_repr(unsupported)} are accepted by ros2 "
                                      "launch but not implemented by safe-ctrl-bringup")
        if el.text.strip():
            raise self.fail(path, el, f"<{el.tag}> holds text '{el.text.strip()[:40]}'; launch files put "
                                      "everything in attributes")
        if spec.holds_actions:
            return
        tags = {c.tag for c in el.children}
        unknown = tags - set(spec.children) - (nested_ok or set())
        if unknown:
            raise self.fail(path, el, f"Unexpected nested tag(s) found in `{el.tag}`: {_set_repr(unknown)}")
        for child in el.children:
            child_spec = spec.children.get(child.tag)
            if child_spec is not None and not child_spec.implemented:
                raise self.fail(path, child, f"<{child.tag}> inside <{el.tag}> is accepted by ros2 launch but "
                                             "not implemented by safe-ctrl-bringup")

    # --- substitutions ---------------------------------------------------------------------------
    def subst(self, text: str, scope: _Scope, el: _El, what: str, path: Path) -> str:
        """`text` with its substitutions performed, by launch.frontend's grammar: `$(name)` or
        `$(name arg ...)` (arguments separated by one space, optionally quoted), backslash escapes."""
        out: list[str] = []
        i = 0
        where = f"<{el.tag} {what}=...>"
        while i < len(text):
            start = text.find("$(", i)
            while start > 0 and text[start - 1] == "\\":  # an escaped \$( is text
                start = text.find("$(", start + 1)
            if start < 0:
                out.append(_unescape(text[i:]))
                break
            out.append(_unescape(text[i:start]))
            name, args, i = self.parse_substitution(text, start, el, where, path)
            out.append(self.perform(name, args, scope, el, where, path))
        return "".join(out)

    def parse_substitution(self, text: str, start: int, el: _El, where: str, path: Path) -> tuple[str, list[str], int]:
        def bad(why: str) -> LaunchFileError:
            return self.fail(path, el, f"{where}: malformed substitution in '{text}': {why}")

        m = _IDENTIFIER.match(text, start + 2)
        if not m:
            raise bad("a substitution starts with its name, $(name ...)")
        name, i = m.group(0), m.end()
        args: list[str] = []
        if i < len(text) and text[i] == " ":
            while True:
                i += 1
                if i < len(text) and text[i] in "'\"":
                    quote, j = text[i], i + 1
                    while j < len(text) and (text[j] != quote or text[j - 1] == "\\"):
                        j += 1
                    if j >= len(text):
                        raise bad(f"unterminated {quote}")
                    value, i = text[i + 1:j], j + 1
                else:
                    j = i
                    while j < len(text) and (text[j] not in " ()" or text[j - 1] == "\\"):
                        j += 1
                    value, i = text[i:j], j
                    if text.startswith("(", j) and value.endswith("$"):
                        value += "("  # a nested $(...): reported below
                    if not value:
                        raise bad("arguments are separated by exactly one space")
                if "$(" in value:
                    raise self.fail(path, el, f"{where}: nested substitutions ('{text}') are accepted by ros2 "
                                              "launch but not implemented by safe-ctrl-bringup")
                args.append(_unescape(value))
                if i < len(text) and text[i] == " ":
                    continue
                break
        if i >= len(text) or text[i] != ")":
            raise bad("expected ')'")
        return name, args, i + 1

    def perform(self, name: str, args: list[str], scope: _Scope, el: _El, where: str, path: Path) -> str:
        if name not in SUBSTITUTIONS:
            raise self.fail(path, el, f"{where}: Unknown substitution: {name}")
        if name not in SUPPORTED_SUBSTITUTIONS:
            raise self.fail(path, el, f"{where}: $({name}) is accepted by ros2 launch but not implemented by "
                                      "safe-ctrl-bringup")
        expected = {"var": (1,), "env": (1, 2), "find-pkg-share": (1,), "dirname": (0,)}[name]
        if len(args) not in expected:
            raise self.fail(path, el, f"{where}: $({name}) takes {' or '.join(map(str, expected))} "
                                      f"argument(s), got {args}")
        if name == "var":
            if args[0] not in scope.variables:
                raise self.fail(path, el, f"{where}: undefined launch argument '{args[0]}' "
                                          f"(launch configuration '{args[0]}' does not exist)")
            return scope.variables[args[0]]
        if name == "env":
            value = scope.env[args[0]] if args[0] in scope.env else os.environ.get(args[0])
            if value is None:
                if len(args) == 2:
                    return args[1]
                raise self.fail(path, el, f"{where}: environment variable '{args[0]}' is not set")
            return value
        if name == "find-pkg-share":
            return str(find_package_share(args[0]))
        return str(path.parent)  # dirname

    # --- attributes ------------------------------------------------------------------------------
    def attr(self, el: _El, name: str, scope: _Scope, path: Path, default: str | None = None) -> str | None:
        raw = el.attrib.get(name)
        if raw is None:
            return default
        return self.subst(raw, scope, el, name, path)

    def required(self, el: _El, name: str, scope: _Scope, path: Path) -> str:
        value = self.attr(el, name, scope, path)
        if value is None:
            raise self.fail(path, el, f"<{el.tag}> needs the attribute '{name}'")
        return value

    def literal(self, el: _El, name: str, path: Path) -> str | None:
        """An attribute launch_xml reads as a typed literal: substitutions are not performed there."""
        raw = el.attrib.get(name)
        if raw is not None and "$(" in raw:
            raise self.fail(path, el, f"<{el.tag} {name}='{raw}'>: ros2 launch takes a literal here, no substitution")
        return raw

    def enabled(self, el: _El, scope: _Scope, path: Path) -> bool:
        if "if" in el.attrib and "unless" in el.attrib:
            raise self.fail(path, el, f"<{el.tag}>: if and unless conditions can't be used simultaneously")
        for cond in ("if", "unless"):
            value = self.attr(el, cond, scope, path)
            if value is None:
                continue
            low = value.strip().lower()
            if low not in _TRUE | _FALSE:
                raise self.fail(path, el, f"<{el.tag} {cond}=...>: expected true or false (or 1 or 0), got '{value}'")
            return (low in _TRUE) == (cond == "if")
        return True

    # --- elements --------------------------------------------------------------------------------
    def parse_file(self, path: Path, scope: _Scope, cli_args: Mapping[str, str], top: bool) -> None:
        root = read_xml(path)
        if root.tag != "launch":
            raise self.fail(path, root, f"the root element must be <launch>, got <{root.tag}> "
                                        "(ros2 launch: Expected 'launch' as root tag)")
        ignored = set(root.attrib) - LAUNCH_ROOT.attrs
        if ignored:
            raise self.fail(path, root, f"<launch>: attribute(s) {_set_repr(ignored)} would be ignored by ros2 launch; "
                                        "safe-ctrl-bringup refuses them")
        self.check(root, LAUNCH_ROOT, path)
        if "deprecated" in root.attrib:
            self.warnings.append(f"{path} is deprecated: {root.attrib['deprecated']}")
        self.actions(root, path, scope, cli_args)
        if top:  # (arguments declared by included files count: launch configurations are global)
            unknown = sorted(set(cli_args) - set(self.declared))
            if unknown:
                raise LaunchFileError(
                    f"{path}: unknown launch argument(s) {unknown}; declared: {sorted(self.declared)}"
                )

    def actions(self, parent: _El, path: Path, scope: _Scope, cli_args: Mapping[str, str]) -> None:
        for el in parent.children:
            if parent.tag == "group" and el.tag == "keep":
                raise self.fail(path, el, "<keep> inside <group> is accepted by ros2 launch but not implemented by "
                                          "safe-ctrl-bringup")
            spec = self.action_spec(el, path)
            self.check(el, spec, path)
            if not self.enabled(el, scope, path):
                continue
            tag = el.tag
            if tag == "arg":
                self.arg(el, path, scope, cli_args)
            elif tag == "let":
                name = self.required(el, "name", scope, path)
                scope.variables[name] = self.required(el, "value", scope, path)
            elif tag == "set_env":
                scope.env[self.required(el, "name", scope, path)] = self.required(el, "value", scope, path)
            elif tag == "unset_env":
                scope.env[self.required(el, "name", scope, path)] = None
            elif tag in ("push-ros-namespace", "push_ros_namespace"):
                scope.namespace = _join_ns(scope.namespace, self.required(el, "namespace", scope, path))
            elif tag == "group":
                raw = self.literal(el, "scoped", path)
                scoped = True if raw is None else _yaml_bool(raw)
                if scoped is None:
                    raise self.fail(path, el, f"<group scoped='{raw}'>: expected true or false")
                inner = _Scope(dict(scope.variables), scope.namespace, dict(scope.env)) if scoped else scope
                self.actions(el, path, inner, cli_args)
            elif tag == "include":
                self.include(el, path, scope)
            elif tag == "node":
                self.nodes.append(self.node(el, path, scope))
            else:  # pragma: no cover - LAUNCH_XML lists a supported tag that has no branch here
                raise self.fail(path, el, f"<{tag}> has no implementation")

    def arg(self, el: _El, path: Path, scope: _Scope, cli_args: Mapping[str, str]) -> None:
        if "name" not in el.attrib:
            raise self.fail(path, el, "<arg> needs the attribute 'name'")
        name = _unescape(el.attrib["name"])  # the name and description take no substitution
        if name in cli_args:
            scope.variables[name] = cli_args[name]
        elif name not in scope.variables:
            default = self.attr(el, "default", scope, path)
            if default is None:
                raise self.fail(path, el, f"Required launch argument \"{name}\" was not provided "
                                          "(it has no default and was not given)")
            scope.variables[name] = default
        choices = []
        for child in el.children:
            self.check(child, LAUNCH_XML["arg"].children["choice"], path)
            if "value" not in child.attrib:
                raise self.fail(path, child, "<choice> needs the attribute 'value'")
            choices.append(_unescape(child.attrib["value"]))
        if choices and scope.variables[name] not in choices:
            raise self.fail(path, el, f"Argument \"{name}\" provided value \"{scope.variables[name]}\" is not valid. "
                                      f"Valid options are: {choices}")
        description = el.attrib.get("description")
        if description is not None:
            description = _unescape(description)
            if choices:
                description += ("" if description.endswith(".") else ".") + f" Valid choices are: {choices}"
        elif choices:
            description = f"One of: {choices}"
        self.declared.setdefault(name, description)

    def include(self, el: _El, path: Path, scope: _Scope) -> None:
        file = Path(self.required(el, "file", scope, path))
        if not file.is_absolute():
            file = path.parent / file
        given: dict[str, str] = {}
        for child in el.children:
            self.check(child, LAUNCH_XML["include"].children["arg"], path)
            given[self.required(child, "name", scope, path)] = self.required(child, "value", scope, path)
        # Not scoped, as upstream's IncludeLaunchDescription: the given arguments and whatever the
        # included file sets (launch arguments, namespace, environment) stay set after it.
        scope.variables.update(given)
        self.parse_file(file, scope, given, top=False)

    def node(self, el: _El, path: Path, scope: _Scope) -> NodeSpec:
        ns = _join_ns(scope.namespace, self.attr(el, "namespace", scope, path, "") or "")
        on_exit = self.literal(el, "on_exit", path)
        if on_exit not in (None, "shutdown"):
            raise self.fail(path, el, f"Attribute on_exit of Entity node expected to be shutdown but got "
                                      f"`{on_exit}` (other on_exit actions are not supported by ros2 launch either)")
        respawn_raw = self.attr(el, "respawn", scope, path, "false") or "false"
        respawn = _yaml_bool(respawn_raw)
        if respawn is None:
            raise self.fail(path, el, f"<node respawn='{respawn_raw}'>: expected true or false")
        delay_raw = self.literal(el, "respawn_delay", path)
        try:
            delay = 0.0 if delay_raw is None else float(delay_raw)
        except ValueError:
            raise self.fail(path, el, f"<node respawn_delay='{delay_raw}'>: expected a number") from None
        if delay < 0.0:
            raise self.fail(path, el, f"Attribute respawn_delay of Entity node expected to be a non-negative value "
                                      f"but got `{delay}`")
        env = {k: v for k, v in scope.env.items() if v is not None}
        if "pkg" not in el.attrib:
            raise self.fail(path, el, "<node> needs the attribute 'pkg' (without it ros2 launch runs `exec` as a "
                                      "path, which safe-ctrl-bringup does not implement)")
        spec = NodeSpec(
            pkg=self.required(el, "pkg", scope, path),
            exec=self.required(el, "exec", scope, path),
            name=self.attr(el, "name", scope, path),
            namespace=ns,
            args=self.cmdline(el, "args", scope, path),
            ros_arguments=self.cmdline(el, "ros_args", scope, path),
            env=env,
            unset_env=[k for k, v in scope.env.items() if v is None],
            on_exit_shutdown=on_exit == "shutdown",
            respawn=respawn,
            respawn_delay=delay,
            output=self.attr(el, "output", scope, path, "screen") or "screen",
        )
        for child in el.children:
            child_spec = LAUNCH_XML["node"].children[child.tag]
            if child.tag != "param":  # <param> is checked level by level in param()
                self.check(child, child_spec, path)
            if child.tag == "param":
                self.param(child, path, scope, spec, prefix="", top=True)
            elif child.tag == "remap":
                spec.remaps.append(
                    (self.required(child, "from", scope, path), self.required(child, "to", scope, path))
                )
            else:  # env
                spec.env[self.required(child, "name", scope, path)] = self.required(child, "value", scope, path)
        return spec

    def cmdline(self, el: _El, name: str, scope: _Scope, path: Path) -> list[str]:
        """A command-line attribute split as ExecuteProcess._parse_cmdline splits it: the text by shell
        rules, a substitution's value kept whole."""
        raw = el.attrib.get(name)
        if raw is None:
            return []
        holders: dict[str, str] = {}

        def hold(m: re.Match[str]) -> str:
            key = f"\x00{len(holders)}\x00"
            holders[key] = self.subst(m.group(0), scope, el, name, path)
            return key

        text = re.sub(r"(?<!\\)\$\([^()]*\)", hold, raw)
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise self.fail(path, el, f"<{el.tag} {name}='{raw}'>: {exc}") from None
        return [re.sub("\x00\\d+\x00", lambda m: holders[m.group(0)], w) for w in words]

    def param(self, el: _El, path: Path, scope: _Scope, spec: NodeSpec, prefix: str, top: bool) -> None:
        self.check(el, _PARAM if top else _PARAM_NESTED, path)
        if "from" in el.attrib:
            if "name" in el.attrib:
                raise self.fail(path, el, "<param>: name and from attributes are mutually exclusive")
            if el.children:
                raise self.fail(path, el, f"Unexpected nested tag(s) found in `param`: "
                                          f"{_set_repr({c.tag for c in el.children})}")
            file = Path(self.required(el, "from", scope, path))
            if not file.is_absolute():
                file = path.parent / file
            if not file.is_file():
                raise self.fail(path, el, f"params file '{file}' does not exist")
            spec.params_files.append(str(file))
            return
        if "name" not in el.attrib:
            raise self.fail(path, el, "param Entity should have name or from attribute")
        name = prefix + self.required(el, "name", scope, path)
        value = self.attr(el, "value", scope, path)
        if el.children:
            if value is not None:
                raise self.fail(path, el, f"<param name='{name}'>: nested parameters and value attributes are "
                                          "mutually exclusive")
            for child in el.children:
                self.param(child, path, scope, spec, prefix=name + ".", top=False)
            return
        if value is None:
            raise self.fail(path, el, f"<param name='{name}'>: either a value attribute or nested params are needed")
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
    warnings: list[str] = field(default_factory=list)


def parse_launch_file(path: str | Path, cli_args: Mapping[str, str] | None = None) -> LaunchPlan:
    """The nodes a launch file starts, with every substitution resolved."""
    file = Path(path).resolve()
    parser = _Parser()
    # As `ros2 launch`: the command line's arguments are launch configurations before the file runs.
    scope = _Scope(variables=dict(cli_args or {}), namespace="", env={})
    parser.parse_file(file, scope, dict(cli_args or {}), top=True)
    if not parser.nodes:
        raise LaunchFileError(f"{file}: the launch file starts no node")
    return LaunchPlan(file, parser.nodes, dict(scope.variables), parser.declared, parser.warnings)
