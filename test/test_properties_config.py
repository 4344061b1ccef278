"""Property-based tests of every config loader: bad input loads to a valid object or is a ConfigError
that names the file and the key, never another exception.

Each test starts from a shipped, valid config and breaks it: wrong types, wrong sizes, NaN/inf, huge
numbers, missing keys, unknown keys, whole documents replaced by junk. Deterministic (derandomize).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from safe_ctrl_ros import systems
from safe_ctrl_ros.bag.retrain import node_params
from safe_ctrl_ros.disturbances import load_scenario
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import OnlineAdapter
from safe_ctrl_ros.learning.model_file import KEYS as MODEL_KEYS
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.settings import PARAMETERS, adapter_settings, flatten
from safe_ctrl_ros.safety import load_constraints
from safe_ctrl_ros.tasks import make_task

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
MODEL = CONFIG / "models" / "quadrotor_2d_residual.npz"
FLAGSHIP = CONFIG / "quadrotor_2d_flagship.yaml"
DIMS = {"cartpole": (4, 1), "quadrotor_2d": (6, 2), "quadrotor_3d": (12, 4)}
CONSTRAINT_FILES = {
    "cartpole_pole.yaml": "cartpole", "quadrotor_2d_flight.yaml": "quadrotor_2d",
    "quadrotor_3d_flight.yaml": "quadrotor_3d",
}
SCENARIO_FILES = {
    "cartpole_impulse.yaml": "cartpole", "quadrotor_2d_gusts.yaml": "quadrotor_2d",
    "quadrotor_3d_step.yaml": "quadrotor_3d",
}


def check(max_examples: int) -> Any:
    """Modest, deterministic runs: the same examples on every machine."""
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


# --- values -------------------------------------------------------------------------------------
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308, 1e300, 5e-324, -0.0])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), FLOATS, st.text(max_size=6))
VALUES = st.one_of(
    SCALARS,
    st.lists(FLOATS | st.integers(-3, 14), max_size=8),
    st.lists(st.lists(FLOATS | st.integers(-3, 3), max_size=4), max_size=4),
    st.lists(SCALARS, max_size=4),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=3),
)
# Values of the wrong type for a key that wants numbers / text / true-false.
NOT_NUMBERS = st.one_of(
    st.text(max_size=6), st.booleans(), st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=3), SCALARS, min_size=1, max_size=2),
)
NOT_TEXT = st.one_of(st.integers(), FLOATS, st.booleans(), st.lists(SCALARS, max_size=3),
                     st.dictionaries(st.text(max_size=3), SCALARS, min_size=1, max_size=2))
NOT_FLAG = st.one_of(st.integers(), FLOATS, st.text(max_size=6), st.lists(st.booleans(), max_size=2))
UNKNOWN_KEYS = ("colour", "Kind", "lowr", "magnitde", "z")


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties_config")


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def attempt(load: Callable[[], T]) -> T | ConfigError:
    """What `load` returns, or the ConfigError it raises (any other exception fails the test)."""
    try:
        return load()
    except ConfigError as exc:
        return exc


def names_a_key(message: str, keys: set[str]) -> bool:
    return any(re.search(rf"(?<![A-Za-z_]){re.escape(k)}(?![A-Za-z_])", message) for k in keys)


def mutate(spec: dict[str, Any], key: str, delete: bool, value: Any) -> dict[str, Any]:
    out = dict(spec)
    if delete:
        out.pop(key, None)
    else:
        out[key] = value
    return out


# --- constraints files -----------------------------------------------------------------------------
CONSTRAINT_KEYS = ["name", "kind", "variable", "active_dims", "strict", "tolerance", "lower", "upper", "A", "b", "P"]
EXTRA_CONSTRAINTS = [  # the other kinds, as in docs/SAFETY.md
    {"name": "lin", "kind": "linear", "variable": "input_and_state", "A": [[1.0, 1.0]], "b": [3.0],
     "active_dims": [0, 1]},
    {"name": "ball", "kind": "quadratic", "P": [[1.0, 0.0], [0.0, 1.0]], "b": 1.0, "active_dims": [0, 2],
     "strict": True, "tolerance": 0.1},
]


def constraint_doc(file_name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CONFIG / "constraints" / file_name).read_text())
    doc["constraints"] += copy.deepcopy(EXTRA_CONSTRAINTS)
    return dict(doc)


def loads_or_names(path: Path, system: str, keys: set[str]) -> None:
    nx, nu = DIMS[system]
    cs = attempt(lambda: load_constraints(path, nx, nu))
    if isinstance(cs, ConfigError):
        event("ConfigError")
        assert str(path) in str(cs), cs
        assert names_a_key(str(cs), keys), cs
        return
    event("loaded")
    ev = cs.evaluate(np.linspace(-1, 1, nx), np.zeros(nu))  # a valid set evaluates
    assert ev.values.shape == (len(cs.row_names),)
    assert not np.any(np.isnan(ev.values))


@check(150)
@given(
    file_name=st.sampled_from(sorted(CONSTRAINT_FILES)), index=st.integers(0, 5),
    key=st.sampled_from(CONSTRAINT_KEYS + list(UNKNOWN_KEYS)), delete=st.booleans(), value=VALUES,
)
def test_constraint_mutations_load_or_name_the_key(
    tmp_dir: Path, file_name: str, index: int, key: str, delete: bool, value: Any
) -> None:
    doc = constraint_doc(file_name)
    i = index % len(doc["constraints"])
    doc["constraints"][i] = mutate(doc["constraints"][i], key, delete, value)
    path = write_yaml(tmp_dir / "constraints.yaml", doc)
    loads_or_names(path, CONSTRAINT_FILES[file_name], {key, *CONSTRAINT_KEYS})


@check(80)
@given(
    file_name=st.sampled_from(sorted(CONSTRAINT_FILES)), index=st.integers(0, 5),
    key=st.sampled_from(["lower", "upper", "A", "b", "P", "tolerance", "active_dims", "kind", "variable",
                         "strict", "name"]),
    data=st.data(),
)
def test_constraint_wrong_types_name_the_exact_key(
    tmp_dir: Path, file_name: str, index: int, key: str, data: st.DataObject
) -> None:
    doc = constraint_doc(file_name)
    i = index % len(doc["constraints"])
    item = doc["constraints"][i]
    if key in ("lower", "upper", "A", "b", "P") and key not in item:
        key = {"bounded": "lower", "linear": "A", "quadratic": "P"}[item["kind"]]
    wrong = {"strict": NOT_FLAG, "name": NOT_TEXT, "kind": NOT_TEXT, "variable": NOT_TEXT}.get(key, NOT_NUMBERS)
    if key == "active_dims":
        wrong = st.one_of(st.text(min_size=1, max_size=4), st.lists(FLOATS, min_size=1, max_size=3).filter(
            lambda v: any(not float(x).is_integer() for x in v if np.isfinite(x)) or not all(np.isfinite(v))))
    item[key] = data.draw(wrong)
    path = write_yaml(tmp_dir / "constraints.yaml", doc)
    nx, nu = DIMS[CONSTRAINT_FILES[file_name]]
    with pytest.raises(ConfigError) as info:
        load_constraints(path, nx, nu)
    assert f"constraints[{i}].{key}" in str(info.value)
    assert str(path) in str(info.value)


@check(60)
@given(doc=st.one_of(VALUES, st.dictionaries(st.sampled_from(["constraints", "constraint", "version"]), VALUES,
                                            max_size=2)))
def test_constraint_documents_of_any_shape(tmp_dir: Path, doc: Any) -> None:
    path = write_yaml(tmp_dir / "constraints.yaml", doc)
    loads_or_names(path, "cartpole", {"constraints", "top level", *CONSTRAINT_KEYS})


@check(40)
@given(content=st.binary(max_size=64) | st.text(max_size=64))
def test_any_file_content_is_a_config_error_or_loads(tmp_dir: Path, content: bytes | str) -> None:
    path = tmp_dir / "junk.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    for load in (lambda: load_constraints(path, 4, 1), lambda: load_scenario(path, 4, 1, 0.02)):
        result = attempt(load)
        if isinstance(result, ConfigError):
            assert str(path) in str(result)


# --- disturbance scenario files ----------------------------------------------------------------------
DISTURBANCE_KEYS = ["name", "target", "kind", "start", "duration", "magnitude", "decay_rate", "mask", "low", "high",
                    "std", "scale", "frequency", "enabled", "parameter", "value"]
EXTRA_DISTURBANCES = [  # every kind and target at least once
    {"name": "noise", "target": "observation", "kind": "white_noise", "std": 0.01, "start": 0.5},
    {"name": "jitter", "target": "action", "kind": "uniform", "low": -0.1, "high": 0.1, "duration": 2.0},
    {"name": "wave", "target": "force", "kind": "periodic", "scale": 0.01, "frequency": 0.5, "mask": 1.0},
    {"name": "lighter", "target": "parameter", "parameter": "mass", "value": 0.5, "start": 1.0, "duration": 1.0},
]


def scenario_doc(file_name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CONFIG / "disturbances" / file_name).read_text())
    doc["disturbances"] += copy.deepcopy(EXTRA_DISTURBANCES)
    return dict(doc)


def scenario_loads_or_names(path: Path, system: str, keys: set[str]) -> None:
    nx, nu = DIMS[system]
    params = systems.param_specs(system)
    scenario = attempt(lambda: load_scenario(path, nx, nu, 0.02, sorted(params)))
    if isinstance(scenario, ConfigError):
        event("ConfigError")
        assert str(path) in str(scenario), scenario
        assert names_a_key(str(scenario), keys), scenario
        return
    event("loaded")
    nominal = {name: spec.default for name, spec in params.items()}
    with np.errstate(all="ignore"):  # huge but finite magnitudes may overflow: that is the plant's problem
        for t in (0.0, 0.01, 0.5, 1.0, 2.05, 4.2, 9.3, 1e6):  # a valid scenario runs at any time
            assert scenario.observation(t, np.zeros(nx)).shape == (nx,)
            assert scenario.action(t, np.zeros(nu)).shape == (nu,)
            assert scenario.force(t).shape == (6,)
            assert set(scenario.parameters(t, nominal)) == set(nominal)


@check(150)
@given(
    file_name=st.sampled_from(sorted(SCENARIO_FILES)), index=st.integers(0, 7),
    key=st.sampled_from(DISTURBANCE_KEYS + list(UNKNOWN_KEYS)), delete=st.booleans(), value=VALUES,
)
def test_scenario_mutations_load_or_name_the_key(
    tmp_dir: Path, file_name: str, index: int, key: str, delete: bool, value: Any
) -> None:
    doc = scenario_doc(file_name)
    i = index % len(doc["disturbances"])
    doc["disturbances"][i] = mutate(doc["disturbances"][i], key, delete, value)
    path = write_yaml(tmp_dir / "scenario.yaml", doc)
    scenario_loads_or_names(path, SCENARIO_FILES[file_name], {key, *DISTURBANCE_KEYS})


@check(80)
@given(
    file_name=st.sampled_from(sorted(SCENARIO_FILES)), index=st.integers(0, 7),
    key=st.sampled_from(["start", "duration", "magnitude", "mask", "std", "low", "scale", "value", "enabled",
                         "target", "kind", "name", "parameter"]),
    data=st.data(),
)
def test_scenario_wrong_types_name_the_exact_key(
    tmp_dir: Path, file_name: str, index: int, key: str, data: st.DataObject
) -> None:
    doc = scenario_doc(file_name)
    i = index % len(doc["disturbances"])
    item = doc["disturbances"][i]
    if item["target"] == "parameter" and key not in ("start", "duration", "enabled", "target", "name", "parameter"):
        key = "scale" if "scale" in item else "value"
    elif item["target"] != "parameter" and key == "parameter":
        key = "kind"
    elif key in ("magnitude", "std", "low", "scale", "value") and key not in item:
        key = "mask"  # every signal kind has a mask
    wrong = {"enabled": NOT_FLAG, "name": NOT_TEXT, "target": NOT_TEXT, "kind": NOT_TEXT,
             "parameter": NOT_TEXT}.get(key, NOT_NUMBERS)
    item[key] = data.draw(wrong)
    path = write_yaml(tmp_dir / "scenario.yaml", doc)
    nx, nu = DIMS[SCENARIO_FILES[file_name]]
    with pytest.raises(ConfigError) as info:
        load_scenario(path, nx, nu, 0.02)
    assert f"disturbances[{i}].{key}" in str(info.value)
    assert str(path) in str(info.value)


@check(60)
@given(
    doc=st.one_of(VALUES, st.fixed_dictionaries(
        {"seed": st.one_of(st.integers(-(10**30), 10**30), FLOATS, st.text(max_size=3), st.booleans())},
        optional={"disturbances": VALUES, "sead": SCALARS},
    )),
)
def test_scenario_documents_of_any_shape(tmp_dir: Path, doc: Any) -> None:
    path = write_yaml(tmp_dir / "scenario.yaml", doc)
    scenario_loads_or_names(path, "cartpole", {"seed", "sead", "disturbances", "top level", *DISTURBANCE_KEYS})


def test_uniform_range_numpy_cannot_draw_from_is_rejected_at_load(tmp_dir: Path) -> None:
    """U(-1e308, 1e308) loaded before and crashed at its first draw (OverflowError in the injector)."""
    doc = {"disturbances": [{"name": "wild", "target": "action", "kind": "uniform", "low": -1e308, "high": 1e308}]}
    path = write_yaml(tmp_dir / "scenario.yaml", doc)
    with pytest.raises(ConfigError, match=r"disturbances\[0\]\.high: high - low must be a finite number"):
        load_scenario(path, 4, 1, 0.02)


def test_error_messages_read_as_documented(tmp_dir: Path) -> None:
    """The examples quoted in docs/SAFETY.md ("Bad input")."""
    doc = scenario_doc("quadrotor_2d_gusts.yaml")
    doc["disturbances"][1]["magnitude"] = "strong"
    path = write_yaml(tmp_dir / "gusts.yaml", doc)
    with pytest.raises(ConfigError) as info:
        load_scenario(path, 6, 2, 0.02)
    assert str(info.value) == (f"disturbance scenario '{path}': disturbances[1].magnitude: expected a finite number "
                               f"or 6 finite numbers, got 'strong'")
    doc = constraint_doc("cartpole_pole.yaml")
    doc["constraints"][0]["uper"] = doc["constraints"][0].pop("upper")
    path = write_yaml(tmp_dir / "pole.yaml", doc)
    with pytest.raises(ConfigError) as info:
        load_constraints(path, 4, 1)
    assert str(info.value) == (
        f"constraints file '{path}': constraints[0] (kind bounded): unknown key(s) ['uper']; "
        f"known: ['active_dims', 'kind', 'lower', 'name', 'strict', 'tolerance', 'upper', 'variable']"
    )
    with pytest.raises(ConfigError) as info:
        adapter_settings({"trainer.lrr": 0.002})
    assert str(info.value).startswith("unknown adapter parameter(s) ['trainer.lrr']; known: ['batch_size', ")
    with pytest.raises(ConfigError, match=r"^trainer\.lr: expected a finite number > 0, got -0\.001$"):
        adapter_settings({"trainer.lr": -0.001})


# --- task settings -------------------------------------------------------------------------------------
TASK_KEYS = ["kind", "goal", "scale", "length", "num_cycles", "plane", "offset"]
TASKS = [
    ("quadrotor_2d", {"kind": "figure8", "scale": 0.75, "length": 6.0, "plane": "xz", "offset": [0.0, 1.0]}),
    ("quadrotor_3d", {"kind": "circle", "scale": 0.5, "length": 10.0, "num_cycles": 2, "plane": "xy"}),
    ("quadrotor_3d", {"kind": "square", "plane": "yz", "offset": [0.0, 1.0]}),
    ("cartpole", {"kind": "stabilization", "goal": [0.5, 0.0, 0.0, 0.0]}),
]


@check(150)
@given(which=st.integers(0, len(TASKS) - 1), key=st.sampled_from(TASK_KEYS + list(UNKNOWN_KEYS)),
       delete=st.booleans(), value=VALUES)
def test_task_mutations_build_or_name_the_key(which: int, key: str, delete: bool, value: Any) -> None:
    system, spec = TASKS[which]
    model = systems.make(system)
    task = attempt(lambda: make_task(model, mutate(spec, key, delete, value)))
    if isinstance(task, ConfigError):
        event("ConfigError")
        assert names_a_key(str(task), {key}), task
        assert str(task).startswith("task"), task
        return
    event("built")
    with np.errstate(all="ignore"):
        x_ref, u_ref = task.reference([0.0, 0.37, 5.0])
    assert x_ref.shape == (3, model.nx)
    assert u_ref.shape == (3, model.nu)


@check(60)
@given(which=st.integers(0, len(TASKS) - 1), key=st.sampled_from(["scale", "length", "num_cycles", "offset",
                                                                  "plane", "kind", "goal"]), data=st.data())
def test_task_wrong_types_name_the_exact_key(which: int, key: str, data: st.DataObject) -> None:
    system, spec = TASKS[which]
    if spec["kind"] == "stabilization" and key not in ("kind", "goal"):
        key = "goal"
    value = data.draw(NOT_TEXT if key in ("plane", "kind") else NOT_NUMBERS)
    assume(not (key == "goal" and value in ([], "")))  # an empty goal is the equilibrium
    with pytest.raises(ConfigError, match=rf"^task\.{key}: "):
        make_task(systems.make(system), {**spec, key: value})


# --- the residual model file (.npz) ----------------------------------------------------------------------
def model_arrays() -> dict[str, np.ndarray]:
    with np.load(MODEL, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


ARRAYS = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.int16, np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5)),
    st.text(max_size=8).map(np.array),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e308, 0.0, -1.0, 1e-320]).map(np.array),
)


@st.composite
def perturbed(draw: st.DrawFn, original: np.ndarray) -> np.ndarray:
    """Near misses of a valid array: one element short or long, scaled, NaN, another dtype."""
    how = draw(st.sampled_from(["short", "long", "scale", "nan", "float", "text", "2d"]))
    flat = original.reshape(-1)
    if how == "short":
        return flat[:-1] if flat.size else flat
    if how == "long":
        return np.concatenate([flat, flat[:1]])
    if how == "scale":
        factor = draw(st.sampled_from([0.0, -1.0, 1e30, 1e300, 1e-40, 40000.0]))
        with np.errstate(all="ignore"):
            out: np.ndarray = (original * factor).astype(original.dtype) if original.dtype.kind in "iuf" else original
        return out
    if how == "nan":
        out = original.astype(np.float64) if original.dtype.kind in "iuf" else np.array(np.nan)
        if out.size:
            out.reshape(-1)[draw(st.integers(0, out.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        return out
    if how == "float":
        return original.astype(np.float64) + 0.5 if original.dtype.kind in "iuf" else np.array(1.5)
    if how == "text":
        return np.array(str(original.tolist())[:20])
    return np.atleast_2d(original)


def model_loads_or_names(path: Path, keys: set[str]) -> None:
    model = attempt(lambda: load_model(path, 6, 2))
    if isinstance(model, ConfigError):
        event("ConfigError")
        assert str(path) in str(model), model
        assert names_a_key(str(model), keys) or "cannot be read" in str(model), model
        return
    event("loaded")
    rng = np.random.default_rng(0)
    out = model.net.forward_int(rng.normal(size=(4, 6)), rng.normal(size=(4, 2)))  # a valid model runs
    assert out.shape == (4, 6)
    assert np.all(np.isfinite(out))
    assert np.all(np.isfinite(model.net.error_bound(np.zeros((1, 6)), np.zeros((1, 2)))))


@check(150)
@given(key=st.sampled_from([*MODEL_KEYS, "meta", "extra"]), how=st.sampled_from(["delete", "junk", "near"]),
       data=st.data())
def test_model_file_mutations_load_or_name_the_key(
    tmp_dir: Path, key: str, how: str, data: st.DataObject
) -> None:
    arrays = model_arrays()
    if how == "delete":
        arrays.pop(key, None)
    elif how == "junk" or key not in arrays:
        arrays[key] = data.draw(ARRAYS)
    else:
        arrays[key] = data.draw(perturbed(arrays[key]))
    path = tmp_dir / "model.npz"
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    # in_gain and out_gain fix nx and nu, so their errors name both; hidden changes the weight count
    related = {"in_gain": {"out_gain"}, "out_gain": {"in_gain"}, "hidden": {"weights", "scales", "a_scale"},
               "activation": {"ReLU"}}.get(key, set())
    model_loads_or_names(path, {key, *related})


@check(20)
@given(content=st.binary(max_size=200))
def test_model_file_of_any_bytes(tmp_dir: Path, content: bytes) -> None:
    path = tmp_dir / "junk.npz"
    path.write_bytes(b"PK\x03\x04" + content if content[:1] == b"\x00" else content)
    model_loads_or_names(path, set())


def test_model_file_that_is_a_plain_npy_array(tmp_dir: Path) -> None:
    path = tmp_dir / "array.npz"
    with path.open("wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(ConfigError, match=r"not an \.npz archive"):
        load_model(path)


# --- ROS params files as the offline re-trainer reads them (the adapter's section) -------------------------
def adapter_section() -> dict[str, Any]:
    doc = yaml.safe_load(FLAGSHIP.read_text())
    return dict(doc["/**/adapter"]["ros__parameters"])


def set_flat(section: dict[str, Any], name: str, delete: bool, value: Any) -> dict[str, Any]:
    """Set or delete `trainer.eps`-style names in a nested section."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in section.items()}
    head, _, tail = name.partition(".")
    target = out
    if tail:
        if not isinstance(out.get(head), dict):
            out[head] = {}
        target, name = out[head], tail
    if delete:
        target.pop(name, None)
    else:
        target[name] = value
    return out


SETTING_NAMES = [*sorted(PARAMETERS), "trainer.lrr", "buffer_sise", "rollback.window", "model.mass", "trainer"]


@check(150)
@given(name=st.sampled_from(SETTING_NAMES), delete=st.booleans(), value=VALUES)
def test_params_file_mutations_give_settings_or_name_the_parameter(
    tmp_dir: Path, name: str, delete: bool, value: Any
) -> None:
    section = set_flat(adapter_section(), name, delete, value)
    path = write_yaml(tmp_dir / "params.yaml", {"/**/adapter": {"ros__parameters": section}})
    settings_ = attempt(lambda: adapter_settings({**node_params(path, "adapter"), "model_file": str(MODEL)},
                                                 where=f"params file '{path}'"))
    if isinstance(settings_, ConfigError):
        event("ConfigError")
        assert names_a_key(str(settings_), {name, name.split(".")[0], "batch_size", "buffer_size"}), settings_
        return
    event("accepted")
    start = load_model(settings_.model_file)
    adapter = OnlineAdapter(start, systems.make("quadrotor_2d"), settings_.config)  # the core takes them
    assert adapter.cfg == settings_.config


@check(60)
@given(name=st.sampled_from(sorted(PARAMETERS)), data=st.data())
def test_adapter_setting_of_the_wrong_type_is_named(name: str, data: st.DataObject) -> None:
    default = PARAMETERS[name][0]
    wrong = NOT_TEXT if isinstance(default, str) else NOT_FLAG if isinstance(default, bool) else NOT_NUMBERS
    value = data.draw(wrong)  # a flag takes no number or text, a number no flag or text
    with pytest.raises(ConfigError, match=rf"^params file 'p\.yaml': {re.escape(name)}: expected "):
        adapter_settings({name: value}, where="params file 'p.yaml'")


@check(40)
@given(doc=st.one_of(VALUES, st.dictionaries(st.sampled_from(["/**", "adapter", "/ns/adapter", "plant"]),
                                            st.one_of(VALUES, st.fixed_dictionaries({"ros__parameters": VALUES})),
                                            max_size=3)))
def test_params_documents_of_any_shape(tmp_dir: Path, doc: Any) -> None:
    path = write_yaml(tmp_dir / "params.yaml", doc)
    attempt(lambda: adapter_settings(node_params(path, "adapter")))


def test_flatten_names_a_section_that_is_not_a_mapping() -> None:
    assert flatten({"trainer": {"eps": 8}, "dt": 0.02}) == {"trainer.eps": 8, "dt": 0.02}
    with pytest.raises(ConfigError, match=r"^ros__parameters: expected a mapping of parameters, got \[1, 2\]"):
        flatten([1, 2])  # type: ignore[arg-type]
