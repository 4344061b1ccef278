"""Disturbance signals and scenarios: formulas, masks, seeding, independence, bad config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safe_ctrl_ros.disturbances import generator_for, load_scenario, make_scenario
from safe_ctrl_ros.errors import ConfigError

DT = 0.02


def scenario(*items: dict[str, object], seed: int = 1) -> object:
    return make_scenario({"seed": seed, "disturbances": list(items)}, nx=4, nu=1, dt=DT, param_names=["mass"])


def times(n: int = 200) -> np.ndarray:
    return np.arange(n) * DT


def test_impulse_square_and_decaying() -> None:
    sq = scenario({"name": "sq", "target": "force", "kind": "impulse", "start": 1.0, "duration": 0.1,
                   "magnitude": 2.0, "mask": [1, 0, 0, 0, 0, 0]})
    fx = np.array([sq.force(t)[0] for t in times()])  # type: ignore[attr-defined]
    on = np.flatnonzero(fx)
    np.testing.assert_allclose(times()[on], [1.0, 1.02, 1.04, 1.06, 1.08])
    assert np.all(fx[on] == 2.0)
    tri = scenario({"name": "tri", "target": "action", "kind": "impulse", "start": 1.0, "duration": 0.2,
                    "magnitude": 1.0, "decay_rate": 0.5})
    u = np.array([tri.action(t, np.zeros(1))[0] for t in times()])  # type: ignore[attr-defined]
    assert u.max() == 1.0
    assert times()[np.argmax(u)] == pytest.approx(1.1)
    assert u[np.argmax(u) + 1] == pytest.approx(0.5)


def test_step_window_and_periodic_phase() -> None:
    s = scenario({"name": "st", "target": "observation", "kind": "step", "start": 0.5, "duration": 1.0,
                  "magnitude": [0.0, 0.0, 0.1, 0.0]})
    x = np.zeros(4)
    assert s.observation(0.48, x) is x  # type: ignore[attr-defined]
    np.testing.assert_allclose(s.observation(0.5, x), [0, 0, 0.1, 0])  # type: ignore[attr-defined]
    assert s.observation(1.5, x) is x  # type: ignore[attr-defined]
    p = scenario({"name": "wave", "target": "action", "kind": "periodic", "scale": 1.0, "frequency": 1.0})
    a = [p.action(t, np.zeros(1))[0] for t in (0.1, 1.1, 2.1)]  # type: ignore[attr-defined]
    np.testing.assert_allclose(a, a[0])  # a fixed phase: really periodic


def test_noise_statistics_and_masks() -> None:
    s = scenario({"name": "n", "target": "observation", "kind": "white_noise", "std": [0.1, 0.0, 1.0, 0.0]})
    draws = np.array([s.observation(t, np.zeros(4)) for t in times(4000)])  # type: ignore[attr-defined]
    np.testing.assert_allclose(draws.std(axis=0), [0.1, 0.0, 1.0, 0.0], rtol=0.05, atol=1e-12)
    u = scenario({"name": "u", "target": "action", "kind": "uniform", "low": -0.5, "high": 0.5})
    d = np.array([u.action(t, np.zeros(1))[0] for t in times(2000)])  # type: ignore[attr-defined]
    assert -0.5 <= d.min() < -0.45
    assert 0.45 < d.max() <= 0.5


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    spec = {"name": "n", "target": "observation", "kind": "white_noise", "std": 0.1}
    a = [scenario(spec, seed=5).observation(t, np.zeros(4)) for t in times(5)]  # type: ignore[attr-defined]
    b = [scenario(spec, seed=5).observation(t, np.zeros(4)) for t in times(5)]  # type: ignore[attr-defined]
    c = [scenario(spec, seed=6).observation(t, np.zeros(4)) for t in times(5)]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_adding_a_disturbance_leaves_the_others_draws_alone() -> None:
    noise = {"name": "noise", "target": "action", "kind": "white_noise", "std": 1.0}
    alone = scenario(noise)
    with_other = scenario({"name": "other", "target": "action", "kind": "uniform", "low": 0.0, "high": 0.0}, noise)
    a = [alone.action(t, np.zeros(1)) for t in times(20)]  # type: ignore[attr-defined]
    b = [with_other.action(t, np.zeros(1)) for t in times(20)]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(generator_for(1, "a").random(3), generator_for(1, "b").random(3))


def test_parameter_changes_and_disabling() -> None:
    s = scenario({"name": "heavy", "target": "parameter", "parameter": "mass", "scale": 1.3, "start": 1.0,
                  "duration": 1.0})
    assert s.parameters(0.5, {"mass": 0.027}) == {"mass": 0.027}  # type: ignore[attr-defined]
    assert s.parameters(1.5, {"mass": 0.027})["mass"] == pytest.approx(0.0351)  # type: ignore[attr-defined]
    assert s.parameters(2.5, {"mass": 0.027}) == {"mass": 0.027}  # type: ignore[attr-defined]
    s.get("heavy").enabled = False  # type: ignore[attr-defined]
    assert s.parameters(1.5, {"mass": 0.027}) == {"mass": 0.027}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"name": "a", "target": "wind", "kind": "step"}, r"disturbances\[0\]\.target: expected one of"),
        ({"name": "a", "target": "action", "kind": "gust"}, r"disturbances\[0\]\.kind: expected one of"),
        ({"name": "a", "target": "action", "kind": "impulse"}, "needs a duration"),
        ({"name": "a", "target": "action", "kind": "impulse", "duration": 0.1, "decay_rate": 2.0}, "decay_rate"),
        ({"name": "a", "target": "observation", "kind": "step", "magnitude": [1.0, 2.0]}, "4 finite numbers"),
        ({"name": "a", "target": "action", "kind": "step", "amplitude": 1.0}, "unknown key"),
        ({"name": "a", "target": "parameter", "parameter": "colour", "scale": 2.0}, "unknown plant parameter"),
        ({"name": "a", "target": "parameter", "parameter": "mass"}, "exactly one of"),
        ({"name": "a", "target": "parameter", "parameter": "mass", "value": -1.0}, "value: expected a finite number >"),
        ({"name": "9lives", "target": "action", "kind": "step"}, "must start with a letter"),
        ({"name": "a", "target": "action", "kind": "uniform", "low": 1.0, "high": 0.0}, "low: expected low <= high"),
    ],
)
def test_bad_scenarios_are_named(item: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        scenario(item)


def test_duplicate_names_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repeated"):
        scenario({"name": "a", "target": "action", "kind": "step"}, {"name": "a", "target": "action", "kind": "step"})
    bad = tmp_path / "s.yaml"
    bad.write_text("seed: 1\ndisturbances: [\n")
    with pytest.raises(ConfigError, match=r"s\.yaml' is not valid YAML"):
        load_scenario(bad, 4, 1, DT)
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario(tmp_path / "none.yaml", 4, 1, DT)
    bad.write_text("seed: 1\ndisturbances:\n  - {name: a, target: action, kind: step, start: -1}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml': disturbances\[0\]\.start: expected a finite number >= 0, got -1"):
        load_scenario(bad, 4, 1, DT)


def test_shipped_scenarios_load() -> None:
    from safe_ctrl_ros import systems

    root = Path(__file__).resolve().parents[1] / "config" / "disturbances"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        system = "cartpole" if "cartpole" in f.name else "quadrotor_2d"
        m = systems.make(system)
        assert load_scenario(f, m.nx, m.nu, DT, list(m.params)).disturbances


LINK = """
seed: 11
disturbances:
  - name: radio_delay
    target: state_link
    kind: delay
    delay: 0.005
    jitter: 0.002
  - name: radio_loss
    target: command_link
    kind: drop
    probability: 0.01
    start: 1.0
"""


def test_link_faults_delay_with_jitter_and_drop_at_their_rate() -> None:
    import yaml

    from safe_ctrl_ros.disturbances import make_scenario

    sc = make_scenario(yaml.safe_load(LINK), 4, 1, 0.02)
    delays = [sc.link("state_link", k * 0.02) for k in range(2000)]
    assert not any(dropped for dropped, _ in delays)
    waits = np.array([d for _, d in delays])
    assert waits.min() >= 0.003
    assert waits.max() <= 0.007
    assert abs(waits.mean() - 0.005) < 2e-4
    assert sc.link("command_link", 0.5) == (False, 0.0)  # before its start
    drops = [sc.link("command_link", 1.0 + k * 0.02)[0] for k in range(20000)]
    assert 0.007 < np.mean(drops) < 0.013
    again = make_scenario(yaml.safe_load(LINK), 4, 1, 0.02)
    assert [again.link("state_link", k * 0.02) for k in range(2000)] == delays  # seeded
    assert sc.get("radio_loss").kind == "drop"
    # the link faults draw from their own generators: observation noise is unchanged by them
    noise = "  - name: n\n    target: observation\n    kind: white_noise\n    std: 0.1\n"
    with_link = make_scenario(yaml.safe_load(LINK + noise), 4, 1, 0.02)
    alone = make_scenario(yaml.safe_load("seed: 11\ndisturbances:\n" + noise), 4, 1, 0.02)
    with_link.link("state_link", 0.0)
    assert np.array_equal(with_link.observation(0.0, np.zeros(4)), alone.observation(0.0, np.zeros(4)))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("{name: a, target: state_link, kind: delay}", r"disturbances\[0\]\.delay: required"),
        ("{name: a, target: command_link, kind: drop, probability: 1.5}", r"disturbances\[0\]\.probability"),
        ("{name: a, target: command_link, kind: drop, probability: 0.1, delay: 1}", "unknown key"),
        ("{name: a, target: state_link, kind: impulse}", r"disturbances\[0\]\.kind"),
        ("{name: a, target: state_link, kind: delay, delay: -0.001}", r"disturbances\[0\]\.delay"),
    ],
)
def test_link_fault_errors_name_the_key(item: str, message: str) -> None:
    import yaml

    from safe_ctrl_ros.disturbances import make_scenario

    with pytest.raises(ConfigError, match=message):
        make_scenario(yaml.safe_load(f"disturbances: [{item}]"), 4, 1, 0.02)
