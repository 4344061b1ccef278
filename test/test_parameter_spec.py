"""The parameter specs (ROS-free): validation, defaults, families, builders, and the generated docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.errors import ConfigError, UnknownSystemError
from safe_ctrl_ros.learning.settings import ADAPTER, PARAMETERS, SETTINGS, adapter_settings
from safe_ctrl_ros.parameters.controller import CONTROLLER, build_controller
from safe_ctrl_ros.parameters.injector import DISTURBANCE_INJECTOR, build_scenario
from safe_ctrl_ros.parameters.monitor import CONSTRAINT_MONITOR, build_monitor
from safe_ctrl_ros.parameters.registry import NODE_SPECS
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec, ParamType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import param_docs  # noqa: E402

T = ParamType


# --- ParamSpec -------------------------------------------------------------------------------------
def test_doubles_take_whole_numbers_and_refuse_text_and_bools() -> None:
    p = ParamSpec("dt", T.DOUBLE, 0.02, "period", low=0.0, low_open=True)
    value = p.validate(3)
    assert isinstance(value, float)
    assert value == 3.0
    for bad in ("fast", True, float("nan"), 0.0, -1.0):
        with pytest.raises(ConfigError, match=r"^parameter 'dt': expected a finite number > 0, got "):
            p.validate(bad)


def test_integers_refuse_floats_and_check_closed_bounds() -> None:
    p = ParamSpec("n", T.INT, 5, "count", low=1, high=10)
    assert p.validate(10) == 10
    assert p.validate(1) == 1
    for bad in (0, 11, 2.0, False):
        with pytest.raises(ConfigError, match=r"^parameter 'n': expected an integer in \[1, 10\]"):
            p.validate(bad)


def test_choices_sizes_and_elementwise_bounds() -> None:
    mode = ParamSpec("mode", T.STRING, "a", "mode", choices=("a", "b"))
    assert mode.validate("b") == "b"
    with pytest.raises(ConfigError, match=r"^parameter 'mode': expected one of \('a', 'b'\), got 'c'$"):
        mode.validate("c")
    offset = ParamSpec("offset", T.DOUBLE_ARRAY, [0.0, 0.0], "xy", min_size=2, max_size=2, low=-1.0)
    assert offset.validate([1, 2]) == [1.0, 2.0]
    with pytest.raises(ConfigError, match=r"^parameter 'offset': expected 2 values, got 3$"):
        offset.validate([0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match=r"^parameter 'offset'\[1\]: expected a finite number >= -1, got -2\.0$"):
        offset.validate([0.0, -2.0])
    with pytest.raises(ConfigError, match=r"^parameter 'offset': expected a list"):
        offset.validate("0, 0")


def test_specs_that_ros_could_not_declare_with_a_value_are_refused() -> None:
    with pytest.raises(ValueError, match="empty array"):
        ParamSpec("goal", T.DOUBLE_ARRAY, [1.0], "goal", min_size=0)
    with pytest.raises(ValueError, match="invalid"):  # a default outside its own range
        ParamSpec("x", T.DOUBLE, -1.0, "x", low=0.0)
    with pytest.raises(ValueError, match="derived"):
        ParamSpec("x", T.DOUBLE_ARRAY, None, "x")


def test_constraint_text() -> None:
    assert ParamSpec("a", T.DOUBLE, 0.5, "", low=0.0, high=1.0, high_open=True).constraint_text() == "in [0, 1)"
    assert ParamSpec("b", T.INT_ARRAY, [1], "", low=1).constraint_text() == "each >= 1"
    assert ParamSpec("c", T.STRING, "x", "", choices=("x", "y")).constraint_text() == "one of x, y"
    assert ParamSpec("d", T.DOUBLE_ARRAY, [0.0, 0.0], "", min_size=2, max_size=2).constraint_text() == "2 values"


# --- NodeSpec ---------------------------------------------------------------------------------------
def test_resolve_fills_every_default_and_names_unknown_parameters() -> None:
    values = CONTROLLER.resolve({"system": "quadrotor_2d", "lqr.Q": [1, 2, 3, 4, 5, 6]})
    assert values["lqr.Q"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert values["model.mass"] == 0.027  # the system's family
    assert "model.pole_mass" not in values
    u_eq = systems.make("quadrotor_2d").equilibrium()[1].tolist()
    assert values["fallback.command"] == u_eq  # derived
    assert values["task.goal"] == [0.0] * 6
    assert set(values) == {p.name for p in CONTROLLER.expanded(values)}
    with pytest.raises(ConfigError, match=r"^node 'c': unknown parameter\(s\) \['lqr\.q'\]; declared parameters: "):
        CONTROLLER.resolve({"lqr.q": [1.0]}, where="node 'c': ")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['model\.mass'\]"):  # not a cart-pole's
        CONTROLLER.resolve({"model.mass": 1.0})
    with pytest.raises(UnknownSystemError, match="unknown system 'cartpoll'"):
        CONTROLLER.resolve({"system": "cartpoll"})
    with pytest.raises(ConfigError, match=r"parameter 'model\.pole_mass': expected a finite number > 0"):
        CONTROLLER.resolve({"model.pole_mass": -0.1})


def test_a_given_value_replaces_a_derived_default() -> None:
    values = CONTROLLER.resolve({"fallback.command": [1]})
    assert values["fallback.command"] == [1.0]


@pytest.mark.parametrize("name", list(NODE_SPECS))
def test_every_parameter_of_every_node_has_a_value(name: str) -> None:
    spec = NODE_SPECS[name]
    for system in systems.SYSTEM_NAMES if any(f.key == "system" for f in spec.families) else ["-"]:
        given = {} if system == "-" else {"system": system}
        values = spec.resolve(given)
        for p in spec.expanded(values):
            assert values[p.name] is not None, p.name
            if p.type.is_array:
                assert len(values[p.name]) >= 1, p.name  # ROS 2 declares [] without a value


def test_a_spec_lists_each_name_once() -> None:
    p = ParamSpec("x", T.BOOL, True, "x")
    with pytest.raises(ValueError, match="twice"):
        NodeSpec("n", (p, p))


# --- builders ---------------------------------------------------------------------------------------
def test_build_controller_gives_the_core_objects_the_parameters_name() -> None:
    q = [1.0, 1.0, 10.0, 1.0]
    built = build_controller(CONTROLLER.resolve({"lqr.Q": q, "lqr.R": [0.5], "dt": 0.01}))
    model = systems.make("cartpole")
    direct = LqrController(model, np.diag(q), 0.5, 0.01, "exact")
    np.testing.assert_array_equal(built.law.lqr.K, direct.K)
    assert built.law.nmpc is None
    np.testing.assert_array_equal(built.law.safe_command, model.equilibrium()[1])
    assert built.residual is None


def test_build_controller_residual_gains_broadcast_and_p_needs_terminal_cost() -> None:
    values = CONTROLLER.resolve({"residual.enabled": True, "residual.in_gain": [2.0], "residual.hidden": [4]})
    built = build_controller(values)
    assert built.residual is not None
    np.testing.assert_array_equal(built.residual.in_gain, np.full(5, 2.0))
    np.testing.assert_array_equal(built.residual.out_gain, np.ones(4))
    assert built.residual.hidden == (4,)
    with pytest.raises(ConfigError, match=r"parameter 'nmpc\.P': used only with nmpc\.terminal_cost 'weight'"):
        build_controller(CONTROLLER.resolve({"nmpc.P": [2.0]}))


def test_build_monitor_and_scenario() -> None:
    path = str(REPO / "config" / "constraints" / "cartpole_pole.yaml")
    monitor = build_monitor(CONSTRAINT_MONITOR.resolve({"constraints_file": path, "reaction.clear_after": 3}))
    assert monitor.clear_after == 3
    assert len(monitor.constraints.constraints) >= 1
    scenario_file = str(REPO / "config" / "disturbances" / "cartpole_impulse.yaml")
    scenario = build_scenario(DISTURBANCE_INJECTOR.resolve({"scenario_file": scenario_file, "seed": 7}))
    assert scenario.seed == 7
    assert build_scenario(DISTURBANCE_INJECTOR.resolve({})).disturbances == []


def test_adapter_settings_come_from_the_same_specs() -> None:
    assert set(PARAMETERS) == {p.name for p in SETTINGS}
    assert set(PARAMETERS) < set(ADAPTER.names)
    assert adapter_settings({}).config.trainer.eps == ADAPTER["trainer.eps"].default
    with pytest.raises(ConfigError, match=r"^diverge_factor: expected 0 \(never\) or a finite number > 1, got 0\.5$"):
        adapter_settings({"diverge_factor": 0.5})
    assert adapter_settings({"diverge_factor": 0}).config.diverge_factor == 0.0


# --- generated docs ---------------------------------------------------------------------------------
def test_markdown_table() -> None:
    spec = NodeSpec("n", (
        ParamSpec("dt", T.DOUBLE, 0.02, "period | s", low=0.0, low_open=True),
        ParamSpec("on", T.BOOL, True, "switch", read_only=False),
    ))
    assert spec.markdown() == (
        "| parameter | type | default | valid values | changeable | description |\n"
        "|---|---|---|---|---|---|\n"
        "| `dt` | double | `0.02` | > 0 | no | period \\| s |\n"
        "| `on` | bool | `true` | - | **yes** | switch |\n"
    )


def test_architecture_tables_match_the_specs() -> None:
    text = param_docs.DOC.read_text()
    assert sorted(param_docs.marked_nodes(text)) == sorted(NODE_SPECS)
    assert param_docs.render(text) == text, "run: tools/run.sh python tools/param_docs.py --write"


def test_param_docs_tool_finds_drift(tmp_path: Path) -> None:
    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text(param_docs.DOC.read_text().replace("| `controller` | string |", "| `controler` | string |"))
    check = [sys.executable, str(REPO / "tools" / "param_docs.py"), str(doc)]
    assert subprocess.run(check, capture_output=True, check=False).returncode == 1
    assert subprocess.run([*check[:2], "--write", str(doc)], capture_output=True, check=False).returncode == 0
    assert doc.read_text() == param_docs.DOC.read_text()
