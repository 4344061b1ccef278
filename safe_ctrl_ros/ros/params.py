"""Parameter declaration with validation, and params-file checks with errors that name the problem.

rcl reports a malformed params file with a terse parser message, and silently ignores parameters
that a node never declares (a typo in a YAML key would go unnoticed). The checks here run before
and after a node declares its parameters so that both stop the node with a clear message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from safe_ctrl_ros.errors import ConfigError, read_yaml

# Parameters every rclpy node may receive without declaring them.
_IMPLICIT = ("use_sim_time", "qos_overrides.", "start_type_description_service")


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
            if len(kinds) > 1:
                raise ConfigError(
                    f"params file '{path}': '{where}.{key}' mixes types {sorted(kinds)} in one list "
                    f"(write every number with a decimal point, e.g. 0.0)"
                )


def check_params_files(argv: Sequence[str]) -> None:
    for path in params_files(argv):
        check_params_file(path)


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare a parameter with its default and description; return its (possibly overridden) value.

    An empty list default declares a double array whose default is empty (rclpy cannot infer the
    type of `[]`). A whole number given for a float parameter (`duration:=3` on a launch line, `3` in
    YAML) is taken as that float, where rclpy alone would refuse the type.
    """
    descriptor = ParameterDescriptor(name=name, description=description)
    overrides = getattr(node, "_parameter_overrides", {})
    given = overrides.get(name)
    if given is not None and isinstance(default, float) and given.type_ == Parameter.Type.INTEGER:
        overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(given.value))
    elif given is not None and isinstance(default, list) and given.type_ == Parameter.Type.INTEGER_ARRAY and (
        not default or all(isinstance(v, float) for v in default)
    ):
        overrides[name] = Parameter(name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in given.value])
    try:
        if isinstance(default, list) and not default:
            value: Any = node.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY, descriptor).value
            return [] if value is None else list(value)
        return node.declare_parameter(name, default, descriptor).value
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        raise ConfigError(f"node '{node.get_name()}': parameter '{name}': {exc}") from exc


def reject_unknown_overrides(node: Node) -> None:
    """Raise ConfigError when a params file or -p sets a parameter the node never declared."""
    overrides = getattr(node, "_parameter_overrides", {})
    unknown = sorted(
        name for name in overrides if not node.has_parameter(name) and not name.startswith(_IMPLICIT)
    )
    if unknown:
        declared = sorted(node._parameters)
        raise ConfigError(
            f"node '{node.get_name()}': unknown parameter(s) {unknown}; declared parameters: {declared}"
        )


def float_list(value: Any, name: str) -> list[float]:
    """A parameter given as a list of numbers (ints accepted), validated."""
    if value is None:
        return []
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameter '{name}': expected a list of numbers, got {value!r}") from exc
