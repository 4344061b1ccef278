"""Parameter specs: each node's parameters described once, ROS-free.

A `NodeSpec` lists a node's parameters as `ParamSpec`s (name, type, default, description, range or
choices, read_only). From it follow, without repeating any of it:

- the declaration with ParameterDescriptors (`safe_ctrl_ros.ros.params.declare_parameters`): rclpy
  itself then refuses an out-of-range or read-only `ros2 param set`, and `ros2 param describe`
  shows the constraint;
- the validation of the values (`NodeSpec.resolve`, `ParamSpec.validate`; a ConfigError names the
  parameter), at start-up and for every change (`safe_ctrl_ros.ros.params.watch_parameters`: the
  on-set callback validates, the post-set callback applies);
- the parameter tables in docs/ARCHITECTURE.md (`NodeSpec.markdown`, tools/param_docs.py).

Usage (a node)::

    from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec, ParamType as T
    from safe_ctrl_ros.parameters.common import MODEL, SYSTEM, model_of
    from safe_ctrl_ros.ros.params import declare_parameters, node_options, watch_parameters

    SPEC = NodeSpec("my_node", (
        SYSTEM,
        ParamSpec("dt", T.DOUBLE, 0.02, "control period in s", low=0.0, low_open=True),
        ParamSpec("mode", T.STRING, "lockstep", "how to step", choices=("lockstep", "realtime")),
        ParamSpec("gain", T.DOUBLE, 1.0, "changeable at run time", low=0.0, high=10.0, read_only=False),
        ParamSpec("goal", T.DOUBLE_ARRAY, None, "the goal state", derived="the equilibrium state"),
    ), families=(MODEL,), derive=lambda v: {"goal": model_of(v).equilibrium()[0].tolist()})

    class MyNode(Node):
        def __init__(self, **kw):
            super().__init__("my_node", **node_options(kw))     # declares the given overrides
            values = declare_parameters(self, SPEC)            # ConfigError naming the parameter
            ...build the core object from `values` (a ROS-free builder)...
            watch_parameters(self, SPEC, self._apply)          # only read_only=False ones change

Every parameter has a value: an array whose default depends on the model (the equilibrium input,
a goal) is `derived` (default None, `derive` computes it from the other values at start-up), so
`ros2 param get` shows the value in use. Parameters are read_only unless the node applies changes.
A `ParamFamily` adds parameters whose names depend on another parameter's value (`model.<name>` of
the chosen `system`). To show a node's table in docs/ARCHITECTURE.md, add its spec to
`safe_ctrl_ros.parameters.registry.NODE_SPECS` and the markers `<!-- BEGIN params:NODE -->` /
`<!-- END params:NODE -->`, then run `tools/run.sh python tools/param_docs.py --write`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from numbers import Integral
from typing import Any

from safe_ctrl_ros import config_check as check
from safe_ctrl_ros.errors import ConfigError


class ParamType(Enum):
    BOOL = "bool"
    INT = "int"
    DOUBLE = "double"
    STRING = "string"
    INT_ARRAY = "int[]"
    DOUBLE_ARRAY = "double[]"
    STRING_ARRAY = "string[]"

    @property
    def is_array(self) -> bool:
        return self.value.endswith("[]")

    @property
    def element(self) -> ParamType:
        return ParamType(self.value.removesuffix("[]"))


def _label(name: str) -> str:
    return f"parameter '{name}'"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. `low`/`high` bound numbers (each element of an array); `choices` bound text."""

    name: str
    type: ParamType
    default: Any  # a value of `type`; None for a `derived` default
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    read_only: bool = True  # False: the node applies changes at run time
    min_size: int = 1  # arrays: the fewest elements (ROS 2 cannot give an empty array a value)
    max_size: int | None = None
    derived: str = ""  # the default is computed at start-up (NodeSpec.derive): from what
    check: Callable[[Any, str], Any] | None = None  # a further check (after type, range, choices)

    def __post_init__(self) -> None:
        if (self.default is None) != bool(self.derived):
            raise ValueError(f"{self.name}: a default of None means a derived default, and only that")
        if self.choices and self.type.element != ParamType.STRING:
            raise ValueError(f"{self.name}: choices are for text parameters")
        if self.type.is_array and self.min_size < 1:
            raise ValueError(f"{self.name}: an empty array has no value in ROS 2 (it is declared unset)")
        if self.type.element == ParamType.INT and (self.low_open or self.high_open):
            raise ValueError(f"{self.name}: integer bounds are closed")
        if self.default is not None:
            try:
                self.validate(self.default, self.name)
            except ConfigError as exc:  # a spec whose default is invalid is a bug
                raise ValueError(f"{self.name}: invalid default: {exc}") from exc

    def validate(self, value: Any, where: str | None = None) -> Any:
        """`value` checked and normalized (an int for a double, a list for an array), or ConfigError."""
        where = _label(self.name) if where is None else where
        if self.type.is_array:
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise ConfigError(f"{where}: expected a list ({self.type.value}), got {check.shown(value)}")
            items = list(value)
            if len(items) < self.min_size or (self.max_size is not None and len(items) > self.max_size):
                raise ConfigError(f"{where}: expected {self._size_text()} values, got {len(items)}")
            out: Any = [self._scalar(self.type.element, v, f"{where}[{i}]") for i, v in enumerate(items)]
        else:
            out = self._scalar(self.type, value, where)
        return out if self.check is None else self.check(out, where)

    def _scalar(self, kind: ParamType, value: Any, where: str) -> Any:
        if kind == ParamType.BOOL:
            return check.flag(value, where)
        if kind == ParamType.STRING:
            text = check.text(value, where)
            return check.choice(text, self.choices, where) if self.choices else text
        if kind == ParamType.INT:
            low = None if self.low is None else int(self.low)
            high = None if self.high is None else int(self.high)
            return check.integer(value, where, low, high)
        if isinstance(value, Integral) and not isinstance(value, bool):
            value = float(value)  # a whole number for a double: `duration:=3` on a launch line
        return check.number(value, where, self.low, self.high, low_open=self.low_open, high_open=self.high_open)

    def _size_text(self) -> str:
        if self.max_size is None:
            return f"at least {self.min_size}"
        return str(self.min_size) if self.min_size == self.max_size else f"{self.min_size} to {self.max_size}"

    def range_text(self) -> str:
        """The numeric bounds, e.g. '> 0', 'in [0, 1)', '' for none."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            return f"in {'(' if self.low_open else '['}{_num(low)}, {_num(high)}{')' if self.high_open else ']'}"
        if low is not None:
            return f"{'>' if self.low_open else '>='} {_num(low)}"
        if high is not None:
            return f"{'<' if self.high_open else '<='} {_num(high)}"
        return ""

    def constraint_text(self) -> str:
        """What a valid value is, beyond its type (for docs and ParameterDescriptor.additional_constraints)."""
        parts: list[str] = []
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        if self.range_text():
            parts.append(("each " if self.type.is_array else "") + self.range_text())
        if self.type.is_array and (self.min_size > 1 or self.max_size is not None):
            parts.append(f"{self._size_text()} values")
        return "; ".join(parts)


@dataclass(frozen=True)
class ParamFamily:
    """Parameters named `prefix<name>` whose set depends on the value of parameter `key`
    (the `model.<name>` physical parameters of the chosen `system`)."""

    prefix: str
    key: str
    members: Callable[[Any], tuple[ParamSpec, ...]]  # ConfigError for a key value it does not know
    description: str
    read_only: bool = True  # every member's flag


@dataclass(frozen=True)
class NodeSpec:
    node: str
    params: tuple[ParamSpec, ...]
    families: tuple[ParamFamily, ...] = ()
    # The defaults of `derived` parameters, from the other values (called only when one is not given).
    derive: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    _by_name: dict[str, ParamSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {p.name: p for p in self.params}
        if len(by_name) != len(self.params):
            raise ValueError(f"{self.node}: a parameter is listed twice")
        for fam in self.families:
            if fam.key not in by_name:
                raise ValueError(f"{self.node}: family {fam.prefix}* depends on '{fam.key}', which is not listed")
        if any(p.derived for p in self.params) and self.derive is None:
            raise ValueError(f"{self.node}: derived defaults need `derive`")
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __getitem__(self, name: str) -> ParamSpec:
        return self._by_name[name]

    def expanded(self, values: Mapping[str, Any]) -> tuple[ParamSpec, ...]:
        """Every parameter, with each family's members for the (valid) value of its key in `values`."""
        out: list[ParamSpec] = []
        for p in self.params:
            out.append(p)
            for fam in self.families:
                if fam.key == p.name:
                    members = fam.members(values.get(p.name, p.default))
                    out.extend(replace(m, read_only=fam.read_only) for m in members)
        return tuple(out)

    def resolve(
        self, given: Mapping[str, Any], where: str = "", label: Callable[[str], str] = _label
    ) -> dict[str, Any]:
        """The value of every parameter: given (validated) or its default (derived ones last).

        Names that are no parameter of this node are an error (a typo must not fall back to a
        default silently). Errors read `{where}{label(name)}: expected ...`.
        """
        values: dict[str, Any] = {}
        for p in self.params:  # families' keys first, their members after
            if not p.derived:
                values[p.name] = p.validate(given.get(p.name, p.default), where + label(p.name))
        specs = self.expanded(values)
        known = {p.name for p in specs}
        unknown = sorted(str(n) for n in given if n not in known)
        if unknown:
            raise ConfigError(f"{where}unknown parameter(s) {unknown}; declared parameters: {sorted(known)}")
        for p in specs:
            if p.name not in values and not p.derived:
                values[p.name] = p.validate(given.get(p.name, p.default), where + label(p.name))
        missing = [p for p in specs if p.derived and p.name not in given]
        defaults = self.derive(values) if missing and self.derive is not None else {}
        for p in specs:
            if p.derived:
                value = given[p.name] if p.name in given else defaults[p.name]
                values[p.name] = p.validate(value, where + label(p.name))
        return {p.name: values[p.name] for p in specs}

    def markdown(self) -> str:
        """The parameter table of docs/ARCHITECTURE.md."""
        rows = ["| parameter | type | default | valid values | changeable | description |",
                "|---|---|---|---|---|---|"]
        for p in self.params:
            default = f"derived: {p.derived}" if p.derived else f"`{_shown_default(p.default)}`"
            changeable = "no" if p.read_only else "**yes**"
            desc = p.description.replace("|", "\\|")
            rows.append(f"| `{p.name}` | {p.type.value} | {default} | {p.constraint_text() or '-'} | "
                        f"{changeable} | {desc} |")
            for fam in self.families:
                if fam.key == p.name:
                    changeable = "no" if fam.read_only else "**yes**"
                    rows.append(f"| `{fam.prefix}<name>` | double | per `{fam.key}` | per `{fam.key}` | "
                                f"{changeable} | {fam.description} |")
        return "\n".join(rows) + "\n"


def _shown_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_shown_default(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def ros_value(spec: ParamSpec, value: Any) -> Any:
    """A validated value in the Python form rclpy declares with (floats for doubles, lists)."""
    if spec.type == ParamType.DOUBLE:
        return float(value)
    if spec.type == ParamType.DOUBLE_ARRAY:
        return [float(v) for v in value]
    if spec.type.is_array:
        return list(value)
    return value
