"""Every node's parameters through the parameter services, as `ros2 param dump/get/describe/set` see them.

The flagship graph runs as separate processes over real DDS (plant, disturbance injector,
controller, safety filter (CBF), constraint monitor, adapter; a recorder beside it) and waits for its start, so nothing
moves; the test then calls each node's rcl_interfaces services: ListParameters, GetParameters,
DescribeParameters and SetParameters. In-process tests below cover what the on-set, pre-set and
post-set callbacks add to the descriptors.
"""

from __future__ import annotations

import math
import signal
import subprocess
from typing import Any

import pytest

from helpers.ros import REPO, executable, spin_until, start_bringup

rclpy = pytest.importorskip("rclpy")
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter, parameter_value_to_python  # noqa: E402

from safe_ctrl_ros import systems  # noqa: E402
from safe_ctrl_ros.errors import ConfigError  # noqa: E402
from safe_ctrl_ros.parameters.registry import NODE_SPECS  # noqa: E402
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec, ParamType  # noqa: E402
from safe_ctrl_ros.ros.params import declare_parameters, node_options, watch_parameters  # noqa: E402

NS = "paramdump"
LAUNCH = REPO / "launch" / "quadrotor_2d_flagship.launch.xml"
MODEL_FILE = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
RCLPY_OWN = {"use_sim_time", "start_type_description_service"}


def call(node: Node, executor: SingleThreadedExecutor, srv: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
    client: Any = node.create_client(srv, name)
    try:
        assert spin_until(executor, client.service_is_ready, timeout), f"service {name} is not up"
        future = client.call_async(request)
        assert spin_until(executor, future.done, timeout), f"no answer from {name}"
        return future.result()
    finally:
        node.destroy_client(client)


def double(value: float) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)


def integer(value: int) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate(timeout=30)[0] or ""


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The flagship graph, waiting for its start, and a recorder; a node that calls their services."""
    bag = tmp_path_factory.mktemp("params") / "bag"
    procs = [
        start_bringup(str(LAUNCH), f"namespace:={NS}", "autostart:=false", "duration:=0.0", "safety_filter:=cbf"),
        subprocess.Popen(
            [*executable("recorder"), "--ros-args", "-r", f"__ns:=/{NS}", "-p", f"output:={bag}",
             "-p", "use_sim_time:=true"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ),
    ]
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("param_prober", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor, bag
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        outputs = [stop(p) for p in procs]
        print("\n".join(outputs))


def dump(node: Node, executor: SingleThreadedExecutor, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """name -> value and name -> descriptor of every parameter of node `name`, via its services."""
    base = f"/{NS}/{name}"
    listed = call(node, executor, ListParameters, f"{base}/list_parameters", ListParameters.Request(depth=0), 120.0)
    names = list(listed.result.names)
    got = call(node, executor, GetParameters, f"{base}/get_parameters", GetParameters.Request(names=names))
    described = call(node, executor, DescribeParameters, f"{base}/describe_parameters",
                     DescribeParameters.Request(names=names))
    assert len(got.values) == len(names)  # a name without a value would be missing from the answer
    values = {n: v for n, v in zip(names, got.values, strict=True)}
    return values, {d.name: d for d in described.descriptors}


@pytest.mark.parametrize("name", list(NODE_SPECS))
def test_every_parameter_has_a_value_and_its_descriptor(graph: Any, name: str) -> None:
    node, executor, bag = graph
    values, descriptors = dump(node, executor, name)
    spec: NodeSpec = NODE_SPECS[name]
    expected = {p.name: p for p in spec.expanded({"system": "quadrotor_2d"})}
    if name == "recorder":
        expected = {p.name: p for p in spec.params}
    assert set(values) == set(expected) | RCLPY_OWN
    unset = sorted(n for n, v in values.items() if v.type == ParameterType.PARAMETER_NOT_SET)
    assert unset == []
    for pname, p in expected.items():
        desc = descriptors[pname]
        assert desc.description == p.description
        assert desc.read_only == p.read_only, pname
        assert desc.additional_constraints == p.constraint_text()
        if p.type == ParamType.DOUBLE and p.low is not None:
            assert [r.from_value for r in desc.floating_point_range] == [p.low], pname
        if p.type == ParamType.INT and p.low is not None:
            assert [r.from_value for r in desc.integer_range] == [p.low], pname
    python: dict[str, Any] = {n: parameter_value_to_python(v) for n, v in values.items()}
    u_eq = systems.make("quadrotor_2d").equilibrium()[1].tolist()
    if name == "controller":
        assert list(python["fallback.command"]) == u_eq  # derived: the model's equilibrium input
        assert list(python["task.goal"]) == [0.0] * 6
        assert python["task.kind"] == "figure8"  # from the params file
        assert list(python["lqr.Q"]) == [5.0, 0.1, 5.0, 0.1, 0.1, 0.1]
        assert python["residual.model_file"].endswith("quadrotor_2d_residual.npz")  # from the launch file
        assert python["safety.sync_with_monitor"] is True
        assert python["use_sim_time"] is True
    if name == "plant":
        assert list(python["safe_command"]) == u_eq
        assert python["autostart"] is False
    if name == "adapter":
        assert python["trainer.eps"] == 64.0
        assert python["method"] == "qzo_ff"
        assert python["nice"] == 0
    if name == "recorder":
        assert python["output"] == str(bag)
        assert list(python["topics"]) == [""]


def set_one(graph: Any, name: str, param: str, value: ParameterValue) -> Any:
    node, executor, _ = graph
    request = SetParameters.Request(parameters=[ParameterMsg(name=param, value=value)])
    return call(node, executor, SetParameters, f"/{NS}/{name}/set_parameters", request).results[0]


def get_one(graph: Any, name: str, param: str) -> Any:
    node, executor, _ = graph
    got = call(node, executor, GetParameters, f"/{NS}/{name}/get_parameters", GetParameters.Request(names=[param]))
    return parameter_value_to_python(got.values[0])


def test_set_out_of_range_and_read_only_are_refused_in_range_is_applied(graph: Any) -> None:
    refused = set_one(graph, "controller", "max_state_age", double(-1.0))
    assert not refused.successful
    assert "out of range" in refused.reason
    assert get_one(graph, "controller", "max_state_age") == 0.1
    read_only = set_one(graph, "controller", "dt", double(0.05))
    assert not read_only.successful
    assert get_one(graph, "controller", "dt") == 0.02
    window = set_one(graph, "adapter", "rollback.window", integer(0))  # IntegerRange from 1
    assert not window.successful
    assert get_one(graph, "adapter", "rollback.window") == 50
    accepted = set_one(graph, "controller", "max_state_age", integer(1))  # a whole number for a double
    assert accepted.successful, accepted.reason
    value = get_one(graph, "controller", "max_state_age")
    assert isinstance(value, float)
    assert value == 1.0


# --- in process: what the callbacks add to the descriptors -------------------------------------------
SPEC = NodeSpec("probe", (
    ParamSpec("gain", ParamType.DOUBLE, 1.0, "a gain > 0", low=0.0, low_open=True, high=10.0, read_only=False),
    ParamSpec("mode", ParamType.STRING, "a", "a mode", choices=("a", "b"), read_only=False),
    ParamSpec("steps", ParamType.INT, 4, "steps", low=1),
    ParamSpec("weights", ParamType.DOUBLE_ARRAY, [0.5, 0.5], "weights", low=0.0),
))


def test_node_declares_coerces_validates_and_applies(ros_context: Context) -> None:
    node = Node("probe", context=ros_context, **node_options({"parameter_overrides": [
        Parameter("gain", Parameter.Type.INTEGER, 3),
        Parameter("weights", Parameter.Type.INTEGER_ARRAY, [1, 2]),
    ]}))
    try:
        values = declare_parameters(node, SPEC)
        assert values == {"gain": 3.0, "mode": "a", "steps": 4, "weights": [1.0, 2.0]}
        assert node.get_parameter("gain").type_ == Parameter.Type.DOUBLE
        assert node.get_parameter("steps").value == 4
        applied: list[dict[str, Any]] = []
        watch_parameters(node, SPEC, applied.append)
        edge = node.set_parameters([Parameter("gain", value=0.0)])[0]  # inside the descriptor's range
        assert not edge.successful
        assert "parameter 'gain'" in edge.reason
        assert "in (0, 10]" in edge.reason
        assert node.get_parameter("gain").value == 3.0  # unchanged
        choice = node.set_parameters([Parameter("mode", value="c")])[0]
        assert not choice.successful
        assert "parameter 'mode'" in choice.reason
        assert node.set_parameters([Parameter("steps", value=5)])[0].successful is False  # read only
        assert node.set_parameters([Parameter("gain", value=2)])[0].successful
        assert applied == [{"gain": 2.0}]
        assert math.isclose(node.get_parameter("gain").value, 2.0)
    finally:
        node.destroy_node()


def test_unknown_and_bad_given_parameters_name_the_parameter(ros_context: Context) -> None:
    typo = Node("probe_typo", context=ros_context,
                **node_options({"parameter_overrides": [Parameter("gian", value=2.0)]}))
    bad = Node("probe_bad", context=ros_context,
               **node_options({"parameter_overrides": [Parameter("gain", value=20.0)]}))
    try:
        with pytest.raises(ConfigError, match=r"node 'probe_typo': unknown parameter\(s\) \['gian'\]"):
            declare_parameters(typo, SPEC)
        with pytest.raises(ConfigError, match=r"node 'probe_bad': parameter 'gain': expected a finite number "
                                              r"in \(0, 10\], got 20\.0"):
            declare_parameters(bad, SPEC)
    finally:
        typo.destroy_node()
        bad.destroy_node()


def test_a_node_created_without_node_options_is_caught(ros_context: Context) -> None:
    node = Node("probe_plain", context=ros_context, parameter_overrides=[Parameter("gain", value=2.0)])
    try:
        with pytest.raises(RuntimeError, match="node_options"):
            declare_parameters(node, SPEC)
    finally:
        node.destroy_node()

