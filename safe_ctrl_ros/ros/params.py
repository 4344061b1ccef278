"""Parameters on rclpy nodes, declared from specs (safe_ctrl_ros.parameters), and params-file checks.

`declare_parameters(node, spec)` declares every parameter of a NodeSpec with a ParameterDescriptor
(description, FloatingPointRange/IntegerRange, read_only, the other constraints as text) and a
value, validated by the spec; a parameter given to the node that the spec does not have is an
error. It needs the node created with `node_options(...)` (rclpy's public
`automatically_declare_parameters_from_overrides`: what the params files and `-p` gave is declared,
read, checked against the spec and declared again with its descriptor). `watch_parameters` then
validates run-time changes in an on-set callback (the descriptor has already refused what is out of
range or read only) and hands the accepted ones to the node in a post-set callback.

rcl reports a malformed params file with a terse parser message; the checks below run before
rclpy.init so that it stops the node with a message naming the file and the key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec, ParamType, ros_value

# Parameters every rclpy node may receive without declaring them (rclpy declares them itself).
_IMPLICIT = ("use_sim_time", "qos_overrides.", "start_type_description_service")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ROS_TYPES = {
    ParamType.BOOL: Parameter.Type.BOOL,
    ParamType.INT: Parameter.Type.INTEGER,
    ParamType.DOUBLE: Parameter.Type.DOUBLE,
    ParamType.STRING: Parameter.Type.STRING,
    ParamType.INT_ARRAY: Parameter.Type.INTEGER_ARRAY,
    ParamType.DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY,
    ParamType.STRING_ARRAY: Parameter.Type.STRING_ARRAY,
}


def params_files(argv: Sequence[str]) -> list[Path]:
    """The paths given with --params-file in the --ros-args part of `argv`."""
    files: list[Path] = []
    in_ros = False
    it = iter(argv)
    for arg in it:
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg == "--params-file":
            path = next(it, None)
            if path is None:
                raise ConfigError("--params-file given without a file name")
            files.append(Path(path))
    return files


def check_params_file(path: Path) -> dict[str, Any]:
    """Load a ROS 2 params file, raising ConfigError that names the file and the problem."""
    data = read_yaml(path, "params file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"params file '{path}': expected a mapping of node names at the top, got {type(data).__name__}"
        )
    for node_name, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise ConfigError(
                f"params file '{path}': entry '{node_name}' must hold a 'ros__parameters' mapping"
            )
        if not isinstance(body["ros__parameters"], dict):
            raise ConfigError(f"params file '{path}': '{node_name}.ros__parameters' must be a mapping")
        _check_values(path, f"{node_name}.ros__parameters", body["ros__parameters"])
    return data


def _check_values(path: Path, where: str, mapping: dict[str, Any]) -> None:
    """ROS parameter lists must be homogeneous: [0.1, 0] is an error for rcl, so name it here."""
    for key, value in mapping.items():
        if isinstance(value, dict):
            _check_values(path, f"{where}.{key}", value)
        elif isinstance(value, list):
            kinds = {type(v).__name__ for v in value}
            if not value:
                raise ConfigError(f"params file '{path}': '{where}.{key}' is an empty list, which ROS 2 cannot "
                                  f"give a value: leave the key out for its default")
            if len(kinds) > 1:
                raise ConfigError(
                    f"params file '{path}': '{where}.{key}' mixes types {sorted(kinds)} in one list "
                    f"(write every number with a decimal point, e.g. 0.0)"
                )


def check_params_files(argv: Sequence[str]) -> None:
    """Check the params files and `-p NAME:=VALUE` arguments of `argv` before rclpy reads them."""
    for path in params_files(argv):
        check_params_file(path)
    in_ros = False
    for flag, arg in itertools.pairwise(argv):
        if flag == "--ros-args":
            in_ros = True
        elif flag == "--":
            in_ros = False
        elif in_ros and flag in ("-p", "--param"):
            name, _, value = arg.partition(":=")
            if value.replace(" ", "") == "[]":
                raise ConfigError(f"-p {arg}: an empty list, which ROS 2 cannot give parameter '{name}' as a "
                                  "value: leave it out for its default")


def node_options(node_kwargs: Mapping[str, object]) -> dict[str, Any]:
    """The keyword arguments for Node.__init__ with which `declare_parameters` sees what was given."""
    return {**node_kwargs, "automatically_declare_parameters_from_overrides": True}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of a spec: type, description, range, read_only, other constraints."""
    desc = ParameterDescriptor(
        name=spec.name,
        type=_ROS_TYPES[spec.type].value,
        description=spec.description,
        additional_constraints=spec.constraint_text(),
        read_only=spec.read_only,
    )
    if spec.type == ParamType.DOUBLE and (spec.low is not None or spec.high is not None):
        desc.floating_point_range = [FloatingPointRange(
            from_value=-float("inf") if spec.low is None else float(spec.low),
            to_value=float("inf") if spec.high is None else float(spec.high),
            step=0.0,
        )]
    elif spec.type == ParamType.INT and (spec.low is not None or spec.high is not None):
        desc.integer_range = [IntegerRange(
            from_value=INT64_MIN if spec.low is None else int(spec.low),
            to_value=INT64_MAX if spec.high is None else int(spec.high),
            step=0,
        )]
    return desc


def given_parameters(node: Node) -> dict[str, Any]:
    """What the params files, `-p` and parameter_overrides gave the node (declared by node_options)."""
    names = [n for n in node.list_parameters([], 0).names if not n.startswith(_IMPLICIT)]
    return {p.name: p.value for p in node.get_parameters(names)}


def declare_parameters(node: Node, spec: NodeSpec) -> dict[str, Any]:
    """Declare every parameter of `spec` on `node` with its descriptor; the values by name.

    Raises ConfigError naming the node and the parameter for a bad or unknown one.
    """
    given = given_parameters(node)
    values = spec.resolve(given, where=f"node '{node.get_name()}': ")
    for p in spec.expanded(values):
        value = ros_value(p, values[p.name])
        try:
            if p.name in given:
                node.undeclare_parameter(p.name)  # declared as given; again, with its descriptor
                node.declare_parameter(p.name, value, descriptor(p), ignore_override=True)
            else:
                node.declare_parameter(p.name, value, descriptor(p))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise ConfigError(f"node '{node.get_name()}': parameter '{p.name}': {exc}") from exc
        actual = node.get_parameter(p.name).value
        if p.name not in given and (list(actual) if p.type.is_array else actual) != value:
            raise RuntimeError(
                f"node '{node.get_name()}': parameter '{p.name}' was given but not seen: create the node "
                "with Node.__init__(..., **node_options(kwargs))"
            )
    return values


def watch_parameters(
    node: Node, spec: NodeSpec, apply: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """Validate run-time changes with the spec (on-set) and pass accepted ones to `apply` (post-set).

    rclpy has already refused read-only parameters and values outside a descriptor's range; this
    adds the spec's other checks (choices, open bounds, sizes, custom checks). A whole number set
    on a double parameter is taken as that double (pre-set), as at start-up.
    """
    specs = {p.name: p for p in spec.expanded({n: node.get_parameter(n).value for n in spec.names})}

    def coerce(params: list[Parameter]) -> list[Parameter]:
        out = []
        for param in params:
            p = specs.get(param.name)
            if p is not None and p.type == ParamType.DOUBLE and param.type_ == Parameter.Type.INTEGER:
                param = Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
            elif (p is not None and p.type == ParamType.DOUBLE_ARRAY
                  and param.type_ == Parameter.Type.INTEGER_ARRAY):
                param = Parameter(param.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in param.value])
            out.append(param)
        return out

    def validate(params: list[Parameter]) -> SetParametersResult:
        for param in params:
            p = specs.get(param.name)
            if p is None:
                continue  # rclpy's own (use_sim_time)
            try:
                p.validate(param.value)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def changed(params: list[Parameter]) -> None:
        ours = {p.name: specs[p.name].validate(p.value) for p in params if p.name in specs}
        if ours and apply is not None:
            apply(ours)

    node.add_pre_set_parameters_callback(coerce)
    node.add_on_set_parameters_callback(validate)
    node.add_post_set_parameters_callback(changed)
