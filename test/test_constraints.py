"""Constraint evaluation in safe-control-gym's convention (g <= 0 is satisfied)."""

from __future__ import annotations

import numpy as np
import pytest

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety import make_constraints


def test_bounded_rows_margins_and_names() -> None:
    cs = make_constraints([{"kind": "bounded", "name": "th", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2}], 4, 1)
    ev = cs.evaluate([0.0, 0.0, 0.1, -0.3], [0.0])
    np.testing.assert_allclose(ev.values, [-0.3, 0.1, -0.1, -0.5])  # [lo-z; z-up]
    np.testing.assert_allclose(ev.margins, -ev.values)
    assert ev.violated.tolist() == [False, True, False, False]
    assert cs.row_names == ["th[0]_lower", "th[1]_lower", "th[0]_upper", "th[1]_upper"]


def test_linear_quadratic_input_and_joint_variables() -> None:
    cs = make_constraints(
        [
            {"kind": "linear", "name": "lin", "variable": "input", "A": [[1.0], [-1.0]], "b": [5.0, 5.0]},
            {"kind": "quadratic", "name": "quad", "active_dims": [0, 1], "P": [[1.0, 0.0], [0.0, 1.0]], "b": 1.0},
            {"kind": "linear", "name": "both", "variable": "input_and_state", "active_dims": [0, 4],
             "A": [[1.0, 1.0]], "b": [3.0]},
        ],
        4,
        1,
    )
    ev = cs.evaluate([0.6, 0.8, 0.0, 0.0], [6.0])
    np.testing.assert_allclose(ev.values, [1.0, -11.0, 0.0, 3.6])
    assert ev.violated.tolist() == [True, False, False, True]  # g = 0 is fine unless strict


def test_strict_and_tolerance() -> None:
    cs = make_constraints(
        [{"kind": "bounded", "active_dims": 0, "lower": -1.0, "upper": 1.0, "strict": True, "tolerance": 0.1}], 2, 1
    )
    ev = cs.evaluate([1.0, 0.0], [0.0])
    assert ev.violated.tolist() == [False, True]
    ev = cs.evaluate([0.95, 0.0], [0.0])
    assert ev.violated.tolist() == [False, False]
    assert ev.almost_active.tolist() == [False, True]


def test_non_finite_is_a_violation() -> None:
    cs = make_constraints([{"kind": "quadratic", "P": np.eye(2).tolist(), "b": 1.0}], 2, 1)
    ev = cs.evaluate([np.nan, 0.0], [0.0])
    assert ev.any_violated
    assert np.isinf(ev.values[0])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "box"}, r"constraints\[0\]\.kind: expected one of"),
        ({"kind": "bounded", "lower": 0.0, "upper": [1.0, 2.0, 3.0]}, "lower and upper need"),
        ({"kind": "bounded", "lower": 1.0, "upper": 0.0}, "lower > upper"),
        ({"kind": "bounded", "active_dims": [5], "lower": 0, "upper": 1}, "active_dims"),
        ({"kind": "linear", "A": [[1.0, 2.0, 3.0]], "b": [1.0]}, "A must be"),
        ({"kind": "quadratic", "P": [[1.0]], "b": 1.0}, "P must be"),
        ({"kind": "bounded", "lower": 0, "upper": 1, "colour": "red"}, "unknown key"),
        ({"kind": "bounded", "lower": "low", "upper": 1}, r"constraints\[0\]\.lower: expected a number"),
        ({"kind": "bounded", "variable": "output", "lower": 0, "upper": 1}, r"\[0\]\.variable: expected one of"),
    ],
)
def test_bad_constraint_configs_are_named(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_constraints([spec], 2, 1)
