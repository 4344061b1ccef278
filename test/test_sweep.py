"""The sweep's ROS-free core: spec checking, per-run draws, params/scenario overlays, statistics,
tables, and core-mode runs (no ROS, no Ray) with resume and failure recording."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safe_ctrl_ros.bag.report import main as report_main
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.sweep import draws
from safe_ctrl_ros.sweep.cli import main
from safe_ctrl_ros.sweep.core import run_core
from safe_ctrl_ros.sweep.execute import run_sweep
from safe_ctrl_ros.sweep.metrics import Trajectory, trajectory_metrics
from safe_ctrl_ros.sweep.plan import RunPlan, plan_run, plan_runs
from safe_ctrl_ros.sweep.results import aggregate, markdown, read_sweep
from safe_ctrl_ros.sweep.spec import Distribution, ParamPath, load_spec, make_spec

REPO = Path(__file__).resolve().parents[1]
NMPC = REPO / "launch" / "cartpole_nmpc.launch.xml"
LQR = REPO / "launch" / "cartpole_lqr.launch.xml"


def spec_of(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path)


BASE = f"""
name: t
launch: {NMPC}
args: {{duration: 1.0, controller: lqr}}
seeds: [0, 1, 2]
variants:
  a: {{}}
  b: {{params: {{controller.lqr.R: [0.5]}}}}
randomize:
  params:
    plant.model.pole_mass: {{distrib: uniform, low: 0.08, high: 0.12}}
  init: [0.05, 0.0, 0.02, 0.0]
  disturbances:
    push.start: {{distrib: uniform, low: 0.2, high: 0.6}}
"""


# --- the spec --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("launch: {launch}\nseed: [1]\n", "unknown key"),
    ("launch: {launch}\nseeds: {{first: 0, count: 0}}\n", "seeds.count"),
    ("launch: {launch}\nseeds: [1, 1]\n", "repeated: [1]"),
    ("launch: {launch}\nrandomize: {{params: {{plant.model.pole_mass: {{distrib: gauss}}}}}}\n",
     "randomize.params.plant.model.pole_mass.distrib"),
    ("launch: {launch}\nrandomize: {{params: {{plant.model.pole_mass: {{distrib: uniform, low: 2, high: 1}}}}}}\n",
     "high (1) must be above low (2)"),
    ("launch: {launch}\nrandomize: {{params: {{mass: {{distrib: uniform, low: 1, high: 2}}}}}}\n",
     "'mass' is not a parameter path"),
    ("launch: {launch}\nvariants: {{a: {{args: {{record: true}}}}}}\n", "variants.a.args.record: set by the sweep"),
    ("launch: {launch}\nsearch: {{variant: zz, space: "
     "{{'controller.lqr.R[0]': {{distrib: uniform, low: 0.1, high: 1}}}}}}\n", "search.variant: no variant 'zz'"),
    ("launch: {launch}\ntable: [{{metric: x, format: 'q!'}}]\n", "table[0].format"),
    ("launch: nowhere.launch.xml\n", "launch: file 'nowhere.launch.xml' not found"),
])
def test_a_malformed_spec_is_an_error_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        spec_of(tmp_path, text.format(launch=NMPC))
    assert message in str(err.value)
    assert "spec.yaml" in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    ("launch: {launch}\nargs: {{durration: 1.0}}\n", "unknown launch argument(s) ['durration']"),
    ("launch: {launch}\nvariants: {{a: {{params: {{planet.model.pole_mass: 0.1}}}}}}\n",
     "starts no node 'planet'"),
    ("launch: {launch}\nvariants: {{a: {{params: {{plant.duration: 3.0}}}}}}\n",
     "sets 'duration' of 'plant' itself"),
    ("launch: {launch}\nrandomize: {{disturbances: {{shove.start: {{distrib: uniform, low: 1, high: 2}}}}}}\n",
     "no disturbance 'shove'; it has ['push', 'sensor_noise']"),
])
def test_a_spec_that_does_not_fit_its_launch_file_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    spec = spec_of(tmp_path, text.format(launch=NMPC))
    with pytest.raises(ConfigError) as err:
        plan_runs(spec)
    assert message in str(err.value)


def test_an_unknown_parameter_fails_the_run_with_its_name(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, f"launch: {LQR}\nargs: {{duration: 0.2}}\nvariants: {{a: {{params: {{plant.mas: 1}}}}}}\n")
    [run] = plan_runs(spec)
    [record] = run_sweep([run], tmp_path / "out", "core", 60, 1, use_ray=False)
    assert record["status"] == "failed"
    assert "unknown parameter(s) ['mas']" in record["reason"]


# --- draws -----------------------------------------------------------------------------------------

def test_draws_depend_on_the_seed_alone(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    a0, b0, a1 = plan_run(spec, "a", 0), plan_run(spec, "b", 0), plan_run(spec, "a", 1)
    assert a0.draws == b0.draws  # the variants of one seed: the same vehicle, start and push
    assert a0.draws != a1.draws
    assert plan_run(spec, "a", 0).draws == a0.draws  # a run re-planned alone draws the same
    mass = a0.draws["params:plant.model.pole_mass"]
    assert 0.08 <= mass <= 0.12
    assert 0.2 <= a0.draws["disturbances:push.start"] <= 0.6
    # each draw has its own stream: adding one leaves the others as they were
    extra = "    plant.model.cart_mass: {distrib: normal, mean: 1.0, std: 0.1}\n  init:"
    more = spec_of(tmp_path, BASE.replace("  init:", extra))
    assert plan_run(more, "a", 0).draws["params:plant.model.pole_mass"] == mass
    assert plan_run(more, "a", 0).draws["disturbances:push.start"] == a0.draws["disturbances:push.start"]


def test_sample_covers_each_distribution() -> None:
    rng = np.random.default_rng(3)
    logs = [draws.sample(Distribution("loguniform", low=0.01, high=1.0), rng) for _ in range(2000)]
    assert min(logs) >= 0.01
    assert max(logs) <= 1.0
    assert np.median(logs) == pytest.approx(0.1, rel=0.15)  # log-uniform: the median is the geometric mean
    ints = {draws.sample(Distribution("int", low=2, high=4), rng) for _ in range(200)}
    assert ints == {2, 3, 4}
    picks = {draws.sample(Distribution("choice", values=("x", "y")), rng) for _ in range(100)}
    assert picks == {"x", "y"}


def test_a_run_carries_its_draws_into_its_params_file_and_scenario(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    run = plan_run(spec, "b", 2)
    assert run.params is not None
    assert run.scenario is not None
    plant = run.params["/**/plant"]["ros__parameters"]
    assert plant["model"]["pole_mass"] == run.draws["params:plant.model.pole_mass"]
    assert plant["init_randomization"] == [0.05, 0.0, 0.02, 0.0]
    assert plant["seed"] == draws.derived_seed(2, "plant") == run.draws["plant.seed"]
    assert plant["initial_state"] == [0.0, 0.0, 0.15, 0.0]  # the rest of the file as it was
    assert run.params["/**/controller"]["ros__parameters"]["lqr"]["R"] == [0.5]
    push = next(d for d in run.scenario["disturbances"] if d["name"] == "push")
    assert push["start"] == run.draws["disturbances:push.start"]
    assert run.scenario["seed"] == draws.derived_seed(2, "disturbances")
    assert run.args["seed"] == "-1"  # the injector takes the run's scenario seed from the file


def test_an_indexed_entry_changes_one_element_of_the_array_in_force() -> None:
    data = {"/**/controller": {"ros__parameters": {"nmpc": {"Q": [1.0, 2.0, 3.0]}}}}
    out = draws.apply_params(data, {ParamPath("controller", "nmpc.Q", 1): 9.0}, "t")
    assert out["/**/controller"]["ros__parameters"]["nmpc"]["Q"] == [1.0, 9.0, 3.0]
    assert data["/**/controller"]["ros__parameters"]["nmpc"]["Q"] == [1.0, 2.0, 3.0]  # a copy
    with pytest.raises(ConfigError, match="has no entry 5"):
        draws.apply_params(data, {ParamPath("controller", "nmpc.Q", 5): 9.0}, "t")
    with pytest.raises(ConfigError, match=r"sets no 'nmpc\.R'"):
        draws.apply_params(data, {ParamPath("controller", "nmpc.R", 0): 9.0}, "t")


# --- statistics and tables -------------------------------------------------------------------------

def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    values = [float(v) for v in np.random.default_rng(0).normal(2.0, 1.0, size=12)]
    low, high = stats.bootstrap_ci(values, seed=4)
    assert (low, high) == stats.bootstrap_ci(values, seed=4)
    assert stats.bootstrap_ci(values, seed=5) != (low, high)
    assert low < float(np.mean(values)) < high
    # about as wide as the t interval for 12 normal values
    t = stats.summarize(values)
    assert high - low == pytest.approx(t["ci95_high"] - t["ci95_low"], rel=0.25)
    assert stats.bootstrap_ci([2.5, 2.5, 2.5]) == (2.5, 2.5)
    # against a direct percentile bootstrap of the same draws
    rng = np.random.default_rng(4)
    v = np.array(values)
    means = v[rng.integers(0, 12, size=(10_000, 12))].mean(axis=1)
    assert (low, high) == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)), rel=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        stats.bootstrap_ci([1.0, float("nan")])


def _rec(variant: str, seed: int, rmse: float, ok: bool = True, early: bool = False) -> dict[str, Any]:
    if not ok:
        return {"run": f"{variant}/{seed}", "variant": variant, "seed": seed, "status": "failed", "reason": "boom"}
    return {"run": f"{variant}/{seed}", "variant": variant, "seed": seed, "status": "ok", "tracking_rmse": rmse,
            "return": -10 * rmse, "failed_early": early}


def test_aggregate_gives_the_spread_worst_seed_failures_and_paired_differences() -> None:
    records = [_rec("a", 0, 1.0), _rec("a", 1, 3.0), _rec("a", 2, 2.0, early=True), _rec("a", 3, 0.0, ok=False),
               _rec("b", 0, 0.5), _rec("b", 1, 2.0), _rec("b", 2, 2.5)]
    agg = aggregate(records, ["a", "b"])
    a = agg["summaries"]["a"]
    assert (a["runs"], a["ok"], a["failed_runs"]) == (4, 3, 1)
    assert a["failures"] == [{"seed": 3, "reason": "boom"}]
    assert a["failure_rate"] == pytest.approx(1 / 3)
    rmse = a["metrics"]["tracking_rmse"]
    assert rmse["mean"] == pytest.approx(2.0)
    assert rmse["std"] == pytest.approx(1.0)
    assert (rmse["worst"], rmse["worst_seed"]) == (3.0, 1)
    assert rmse["cvar50"] == pytest.approx(2.5)  # the worse half of 3 values: the 2 highest
    assert a["metrics"]["return"]["worst_seed"] == 1  # higher is better: the worst is the lowest
    d = agg["paired"]["b-a"]
    assert d["seeds"] == [0, 1, 2]
    assert d["metrics"]["tracking_rmse"]["mean"] == pytest.approx((-0.5 - 1.0 + 0.5) / 3)
    rel = d["metrics"]["tracking_rmse"]["relative"]  # b / a - 1 per seed: -0.5, -1/3, +0.25
    assert rel["mean"] == pytest.approx((-0.5 - 1 / 3 + 0.25) / 3)
    assert (rel["min"], rel["max"]) == (pytest.approx(-0.5), pytest.approx(0.25))
    assert rel["boot95_low"] <= rel["mean"] <= rel["boot95_high"]
    text = markdown(agg, ["a", "b"])
    assert "| a | 3 (1 failed) |" in text
    assert "| b-a | - | -19.4% [-50.0, +25.0] (-50..+25) | - | - | - |" in text  # RMSE all only: return < 0
    # a metric only one variant has (adapter updates) is summarized for it, not paired
    for r in records:
        if r["variant"] == "b":
            r["adapter_updates"] = 10 + r["seed"]
    agg = aggregate(records, ["a", "b"])
    assert agg["summaries"]["b"]["metrics"]["adapter_updates"]["mean"] == pytest.approx(11.0)
    assert "adapter_updates" not in agg["summaries"]["a"]["metrics"]
    assert "adapter_updates" not in agg["paired"]["b-a"]["metrics"]
    assert "- a seed 3: boom" in text


def test_the_tables_name_the_runs_where_lockstep_was_broken() -> None:
    records = [_rec("a", 0, 1.0), _rec("a", 1, 2.0), _rec("b", 0, 1.0), _rec("b", 1, 2.0), _rec("b", 2, 0.0, ok=False)]
    assert "Lockstep" not in markdown(aggregate(records, ["a", "b"]), ["a", "b"])  # core runs: not reported
    for r, breaks in zip(records[:4], (0, 0, 0, 2), strict=True):
        r["lockstep_breaks"] = breaks
    agg = aggregate(records, ["a", "b"])
    assert agg["summaries"]["a"]["lockstep"] == {"checked": 2, "broken": []}
    assert agg["summaries"]["b"]["lockstep"] == {"checked": 2, "broken": [{"seed": 1, "breaks": 2}]}
    assert "went on after a wall-clock timeout (not reproducible bit for bit), of 4: b seed 1 (2)." in markdown(
        agg, ["a", "b"])
    records[3]["lockstep_breaks"] = 0
    assert "Lockstep kept in all 4 runs" in markdown(aggregate(records, ["a", "b"]), ["a", "b"])


def test_trajectory_metrics_match_a_hand_computation() -> None:
    from safe_ctrl_ros import systems

    model = systems.make("cartpole")
    x = np.zeros((3, 4))
    x[:, 0] = [0.0, 0.3, 0.4]
    ref = np.zeros((3, 4))
    u = np.array([[1.0], [2.0], [np.nan]])
    margin = np.array([0.1, -0.2, 0.0])
    traj = Trajectory(np.array([0.0, 0.02, 0.04]), x, ref, u, margin, np.array([False, True, True]))
    m = trajectory_metrics(traj, model, duration=0.04, dt=0.02, Q=[1.0, 1.0, 10.0, 1.0], R=[0.1])
    cost = np.array([0.0 + 0.1 * 1.0, 0.09 + 0.1 * 4.0])  # u_eq = 0 for the cart-pole
    assert m["return"] == pytest.approx(-cost.sum())
    assert m["rl_reward"] == pytest.approx(np.exp(-cost).sum())
    assert m["tracking_rmse"] == pytest.approx(np.sqrt((0.09 + 0.16) / 3))
    assert (m["violation_steps"], m["violation_magnitude_max"]) == (2, pytest.approx(0.2))
    assert m["violation_magnitude_sum"] == pytest.approx(0.2)
    assert m["failed_early"] is False
    assert m["episode_length"] == pytest.approx(0.04)
    assert trajectory_metrics(traj, model, duration=1.0, dt=0.02)["failed_early"] is True


# --- core runs -------------------------------------------------------------------------------------

def test_a_core_run_starts_from_the_plants_draw_and_repeats_alone(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    run = plan_run(spec, "a", 1)
    first = run_core(run, tmp_path / "one")
    # re-run alone from the run's own record (run.json), in another folder
    again = run_core(RunPlan.from_json(json.loads((tmp_path / "one" / "run.json").read_text())), tmp_path / "two")
    for key in ("tracking_rmse", "return", "violation_steps", "fallback_steps", "steps"):
        assert first[key] == again[key]
    # the initial state is the plant's own draw: nominal + uniform(+-spread) from the plant's seed
    rng = np.random.default_rng(draws.derived_seed(1, "plant"))
    x0 = np.array([0.0, 0.0, 0.15, 0.0]) + rng.uniform(-np.array([0.05, 0.0, 0.02, 0.0]),
                                                      np.array([0.05, 0.0, 0.02, 0.0]))
    with np.load(tmp_path / "one" / "series.npz") as series:
        assert series["error"][0] == pytest.approx(abs(x0[0]))  # the cart's distance from the goal at t = 0
    other = run_core(plan_run(spec, "a", 2), tmp_path / "three")
    assert other["tracking_rmse"] != first["tracking_rmse"]


def test_core_sweep_resumes_and_records_a_failed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(BASE)
    out = tmp_path / "out"
    assert main([str(spec_file), "--mode", "core", "--serial", "--out", str(out)]) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["provenance"]["commit"]
    code = data["provenance"]["commit"] + ("+dirty" if data["provenance"]["dirty"] else "")
    assert data["run_code"] == [code]  # every run says which code it ran
    assert {r["code"]["commit"] for r in data["records"]} == {data["provenance"]["commit"]}
    assert [r["run"] for r in data["records"]] == [f"{v}/seed_{s:04d}" for s in (0, 1, 2) for v in ("a", "b")]
    first = {r["run"]: r for r in data["records"]}
    # resume: one result removed, one run re-runs; the others are taken as they were
    (out / "runs" / "b" / "seed_0001" / "result.json").unlink()
    assert main([str(spec_file), "--mode", "core", "--serial", "--out", str(out)]) == 0
    again = {r["run"]: r for r in json.loads((out / "sweep.json").read_text())["records"]}
    assert [k for k, r in again.items() if not r.get("resumed")] == ["b/seed_0001"]
    assert again["b/seed_0001"]["tracking_rmse"] == first["b/seed_0001"]["tracking_rmse"]
    # a changed spec (another draw range) is another run: nothing is resumed
    spec_file.write_text(BASE.replace("high: 0.12", "high: 0.13"))
    assert main([str(spec_file), "--mode", "core", "--serial", "--out", str(out)]) == 0
    changed = json.loads((out / "sweep.json").read_text())["records"]
    assert not any(r.get("resumed") for r in changed)
    # a failing variant is recorded with its reason; the others finish
    spec_file.write_text(BASE.replace("b: {params: {controller.lqr.R: [0.5]}}", "b: {params: {plant.substeps: 0}}"))
    assert main([str(spec_file), "--mode", "core", "--serial", "--out", str(tmp_path / "bad")]) == 0
    records = json.loads((tmp_path / "bad" / "sweep.json").read_text())["records"]
    assert {r["variant"]: r["status"] for r in records} == {"a": "ok", "b": "failed"}
    assert all("substeps" in r["reason"] for r in records if r["variant"] == "b")
    table = (tmp_path / "bad" / "table.md").read_text()
    assert "| b | 0 (3 failed) |" in table
    # safe-ctrl-report reads a sweep folder as well as bags: the sweep's own tables
    capsys.readouterr()
    assert report_main([str(tmp_path / "bad")]) == 0
    assert capsys.readouterr().out.strip() == read_sweep(tmp_path / "bad").strip()
    assert "| b | 0 (3 failed) |" in read_sweep(tmp_path / "bad")


def test_the_flagship_spec_plans_ten_seeds_with_mass_and_gust_draws() -> None:
    spec = load_spec(REPO / "config" / "sweeps" / "flagship.yaml")
    assert len(spec.seeds) >= 10
    runs = plan_runs(spec)
    assert {r.variant for r in runs} == {"nominal", "qzo_ff", "bp"}
    scales = {r.draws["disturbances:heavier.scale"] for r in runs}
    assert len(scales) == len(spec.seeds)
    assert all(1.2 <= s <= 1.4 for s in scales)
    gusts = [r.scenario for r in runs if r.variant == "nominal"]
    starts = [next(d["start"] for d in g["disturbances"] if d["name"] == "gust_1") for g in gusts if g]
    assert len(set(starts)) == len(spec.seeds)
    assert [c.label for c in spec.columns][:5] == ["RMSE last 10 s (m)", "RMSE all (m)", "violation steps",
                                                   "fallback steps", "model updates"]


def test_make_spec_refuses_a_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level"):
        make_spec(["a"], tmp_path / "x.yaml")
