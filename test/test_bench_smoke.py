"""Benchmarks keep running and keep writing their documented record format (tiny sizes, no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a benchmark's result file (bench/_results.py: provenance, top-level keys, records)."""
    data = json.loads(path.read_text())
    assert set(data["provenance"]) >= {"commit", "date", "command", "machine", "versions"}
    records: list[dict[str, Any]] = data["records"]
    return records


def test_plant_speed_writes_its_records(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    out = tmp_path / "plant_speed.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "plant_speed.py"), "--core-steps", "50", "--sim-seconds", "0.5",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = read_records(out)
    modes = {(r["system"], r["mode"]) for r in records}
    expected = {("cartpole", "core"), ("quadrotor_3d", "core"), ("cartpole", "composed"), ("cartpole", "processes")}
    assert expected <= modes
    for r in records:
        assert r["steps_per_s"] > 0
        assert r["realtime_factor"] > 0
    assert "x real time" in done.stdout


def test_mpc_solve_writes_its_records(tmp_path: Path) -> None:
    """Tiny closed loops of every scenario and group; the callgrind instruction counts are skipped
    (valgrind's start-up alone takes longer than this whole test)."""
    out = tmp_path / "mpc_solve.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "mpc_solve.py"), "--steps-scale", "0.02", "--no-callgrind",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    records = read_records(out)
    groups = {(r["group"], r["solver"]) for r in records}
    assert groups == {("rti", "rti_hpipm"), ("rti", "sqp_hpipm"), ("rti", "sqp_qrqp"), ("converged", "rti_hpipm"),
                      ("converged", "ipopt"), ("converged", "opti_ipopt"), ("converged", "fatrop")}
    assert {r["scenario"] for r in records} == {"figure8", "figure8_tilt", "pole_constraints", "figure8_residual",
                                               "hover_3d_wind"}
    assert {r["scenario"] for r in records if r["group"] == "converged"} == {"figure8", "figure8_tilt",
                                                                             "pole_constraints"}
    for r in records:
        assert r["horizon"] == 20
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["rmse"] >= 0
        assert r["instructions"] is None  # --no-callgrind
        if r["group"] == "converged":
            assert r["unconverged"] >= 0
    assert data["callgrind"]["skipped"]
    ratios = [s for s in data["summaries"] if "p50_ratio" in s]
    assert {(s["group"], s["solver"], s["vs"]) for s in ratios if s["scenario"] == "figure8"} == {
        ("rti", "sqp_hpipm", "rti_hpipm"), ("rti", "sqp_qrqp", "rti_hpipm"), ("converged", "ipopt", "rti_hpipm"),
        ("converged", "opti_ipopt", "rti_hpipm"), ("converged", "fatrop", "rti_hpipm"),
        ("converged", "opti_ipopt", "ipopt"), ("cross", "opti_ipopt", "rti_hpipm")}
    checks = [s for s in data["summaries"] if s.get("check") == "agreement"]
    assert {s["scenario"] for s in checks} == {"figure8", "figure8_tilt", "pole_constraints"}
    assert all(set(s["solvers"]) == {"rti_hpipm", "opti_ipopt", "fatrop"} for s in checks)


def _run_bench(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / name), *args], capture_output=True, text=True, timeout=600,
        check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_adapter_benches_write_their_records(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from safe_ctrl_ros.learning.memory import RULE

    mem = tmp_path / "mem.json"
    _run_bench("adapter_memory.py", "--depths", "3", "8", "--widths", "32", "--batches", "32", "--no-plot",
               "--no-flagship", "--out", str(mem))
    records = read_records(mem)
    data = json.loads(mem.read_text())
    assert data["rule"] == RULE
    assert [(r["method"], r["depth"]) for r in records] == [(m, d) for d in (3, 8) for m in ("qzo_ff", "fg_fp32", "bp")]
    assert all(set(r) == {"method", "depth", "width", "batch", "extra_bytes"} for r in records)
    extra = {(r["method"], r["depth"]): r["extra_bytes"] for r in records}
    assert extra["qzo_ff", 8] == pytest.approx(extra["qzo_ff", 3], rel=0.05)  # flat in depth
    assert extra["bp", 8] > 3 * extra["bp", 3]  # autograd saves every layer's activations
    assert extra["fg_fp32", 8] > 3 * extra["fg_fp32", 3]  # a perturbed copy of every weight
    ratios = {r["depth"]: r["bp_over_qzo_ff"] for r in data["summaries"]["bp_over_qzo_ff"]}
    assert ratios == {d: pytest.approx(extra["bp", d] / extra["qzo_ff", d]) for d in (3, 8)}


def test_adapter_accuracy_writes_per_seed_records_and_summaries(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    acc = tmp_path / "acc.json"
    _run_bench("adapter_accuracy.py", "--quick", "--steps", "20", "--bp-steps", "10", "--variants", "qzo_ff",
               "fg_fp32", "bp", "--bp-lrs", "1e-3", "1e-2", "--out", str(acc))
    data = json.loads(acc.read_text())
    records = data["records"]
    assert data["seeds"] == [0, 1]
    assert {"passes", "bp_steps", "bp_lrs", "episodes", "model_sha256"} <= set(data["settings"])
    methods = ("qzo_ff", "fg_fp32", "bp", "bp")
    assert [(r["seed"], r["method"]) for r in records] == [(s, m) for s in (0, 1) for m in methods]
    assert all(r["forward_passes"] > 0 and r["final_val_loss"] > 0 for r in records)
    # The seed reaches every component: other data, split, batches and perturbations per seed.
    d0, d1 = data["data"]
    assert all(d0["seeds"][k] != d1["seeds"][k] for k in ("data", "split", "batches", "perturbations"))
    assert d0["pretrained_val_loss"] != d1["pretrained_val_loss"]
    by = {(r["seed"], r["variant"], r["options"]["lr"]): r for r in records}
    assert by[0, "qzo_ff", 0.01]["final_val_loss"] != by[1, "qzo_ff", 0.01]["final_val_loss"]
    # The summaries are over the per-seed records; backprop's lr is the best on average.
    qzo = [by[s, "qzo_ff", 0.01]["final_val_loss"] for s in (0, 1)]
    summary = data["summaries"]["qzo_ff"]["final_val_loss"]
    assert summary["n"] == 2
    assert summary["mean"] == pytest.approx(sum(qzo) / 2, rel=1e-12)
    assert summary["worst"] == max(qzo)
    assert summary["ci95_low"] < summary["mean"] < summary["ci95_high"]
    # The second half of the budget: final loss over the loss at half the passes, per seed.
    curves = [by[s, "qzo_ff", 0.01]["curve"] for s in (0, 1)]
    halves = [next(v for p, v in c if p >= c[-1][0] / 2) for c in curves]
    late = data["summaries"]["qzo_ff"]["second_half_ratio"]
    assert late["mean"] == pytest.approx(sum(c[-1][1] / h for c, h in zip(curves, halves, strict=True)) / 2)
    means = {lr: sum(by[s, "bp", lr]["final_val_loss"] for s in (0, 1)) / 2 for lr in (1e-3, 1e-2)}
    assert data["bp_lr"] == min(means, key=means.__getitem__)
    bp = [by[s, "bp", data["bp_lr"]]["final_val_loss"] for s in (0, 1)]
    assert data["summaries"]["bp"]["final_val_loss"]["mean"] == pytest.approx(means[data["bp_lr"]], rel=1e-12)
    ratios = data["paired"]["qzo_ff_over_bp"]["per_seed"]
    assert ratios == pytest.approx([a / b for a, b in zip(qzo, bp, strict=True)], rel=1e-12)
    assert data["paired"]["qzo_ff_over_bp"]["mean"] == pytest.approx(sum(ratios) / 2, rel=1e-12)
    # A seed run alone gives the same records (deterministic per seed); --merge of such runs gives
    # the summaries of the run over both seeds.
    parts = []
    for seed in ("1", "0"):
        parts.append(tmp_path / f"part{seed}.json")
        _run_bench("adapter_accuracy.py", "--quick", "--first-seed", seed, "--seeds", "1", "--steps", "20",
                   "--bp-steps", "10", "--variants", "qzo_ff", "fg_fp32", "bp", "--bp-lrs", "1e-3", "1e-2",
                   "--out", str(parts[-1]))
    merged = tmp_path / "merged.json"
    _run_bench("adapter_accuracy.py", "--merge", *map(str, parts), "--out", str(merged))
    both = json.loads(merged.read_text())
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in both["records"]] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert both["summaries"] == data["summaries"]
    assert both["paired"] == data["paired"]
    assert [m["seeds"] for m in both["merged_from"]] == [[1], [0]]


def test_adapter_accuracy_reach_is_the_first_curve_point_within_the_factor() -> None:
    """bench/adapter_accuracy.py's `reach`: the passes at which each seed first comes within 1.25x
    (1.5x) of its own reference, None where it never does, and a median that counts those as never."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import adapter_accuracy  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    curves = [[[0, 10.0], [100, 1.4], [200, 1.2]],  # reference 1: 1.5x at 100, 1.25x at 200
              [[0, 10.0], [100, 3.1], [200, 2.6]],  # reference 2: 1.5x at 200, never 1.25x
              [[0, 10.0], [100, 9.0], [200, 8.0]]]  # reference 1: never
    out = adapter_accuracy.reach(curves, [1.0, 2.0, 1.0])
    assert out["x1p25"]["per_seed"] == [200, None, None]
    assert out["x1p25"]["reached"] == 1
    assert out["x1p25"]["median"] is None
    assert out["x1p25"]["worst"] is None
    assert out["x1p5"]["per_seed"] == [100, 200, None]
    assert out["x1p5"]["median"] == 200.0
    assert out["x1p5"]["worst"] is None
    assert out["x1p5"]["resolution"] == 100
    both = adapter_accuracy.reach(curves[:2], [1.0, 2.0])
    assert both["x1p5"]["worst"] == 200
    assert both["x1p5"]["median"] == 150.0


def test_adapter_closed_loop_writes_per_seed_records_and_summaries(tmp_path: Path) -> None:
    loop = tmp_path / "loop.json"
    _run_bench("adapter_closed_loop.py", "--quick", "--variants", "nominal", "qzo_ff", "--out", str(loop))
    data = json.loads(loop.read_text())
    records = data["records"]
    assert data["seeds"] == [0, 1]
    assert data["nmpc"]["solver"] == "rti_hpipm"
    assert data["nmpc"]["horizon"] > 0
    assert data["adapter"]["configs"]["qzo_ff"]["trainer"]["eps"] > 0
    assert [(r["seed"], r["variant"]) for r in records] == [(s, v) for s in (0, 1) for v in ("nominal", "qzo_ff")]
    assert all({"rmse_last_10s", "violation_steps", "p99_solve_ms", "versions"} <= set(r) for r in records)
    by = {(r["seed"], r["variant"]): r for r in records}
    # The seed drives the wind: the unadapted loop flies differently per seed.
    assert by[0, "nominal"]["rmse_last_10s"] != by[1, "nominal"]["rmse_last_10s"]
    assert by[0, "qzo_ff"]["versions"] > 0
    for variant in ("nominal", "qzo_ff"):
        values = [by[s, variant]["rmse_last_10s"] for s in (0, 1)]
        summary = data["summaries"][variant]["rmse_last_10s"]
        assert summary["mean"] == pytest.approx(sum(values) / 2, rel=1e-12)
        assert summary["worst"] == max(values)
    ratios = [by[s, "qzo_ff"]["rmse_last_10s"] / by[s, "nominal"]["rmse_last_10s"] for s in (0, 1)]
    assert data["paired"]["qzo_ff_over_nominal"]["per_seed"] == pytest.approx(ratios, rel=1e-12)
    assert data["cut"]["qzo_ff"]["per_seed"] == pytest.approx([1 - r for r in ratios], rel=1e-12)
    # Without wind, the seed still drives the adapter (its batches and perturbations) and nothing else.
    calm = tmp_path / "calm.json"
    _run_bench("adapter_closed_loop.py", "--quick", "--wind", "0", "--variants", "nominal", "qzo_ff",
               "--out", str(calm))
    by = {(r["seed"], r["variant"]): r for r in json.loads(calm.read_text())["records"]}
    assert by[0, "nominal"]["rmse_last_10s"] == by[1, "nominal"]["rmse_last_10s"]
    assert by[0, "qzo_ff"]["rmse_last_10s"] != by[1, "qzo_ff"]["rmse_last_10s"]


def test_mujoco_closed_loop_records_its_plant_options_and_merges(tmp_path: Path) -> None:
    """bench/mujoco_closed_loop.py: the flags reach the run (previous-input model, adapter
    parameters, the MuJoCo thrust lag), and --merge of two seeds gives the figures over both."""
    pytest.importorskip("mujoco")
    common = ("--seeds", "1", "--seconds", "4", "--previous-input", "--adapter-param", "update_period=2.0")
    parts = [tmp_path / "seed0.json", tmp_path / "seed1.json"]
    for seed, part in enumerate(parts):
        _run_bench("mujoco_closed_loop.py", *common, "--first-seed", str(seed), "--variants", "nominal", "qzo_ff",
                   "--out", str(part))
    seed0 = json.loads(parts[0].read_text())
    assert seed0["plant"]["engine"] == "mujoco"
    assert seed0["plant"]["mujoco"]["thrust_lag"] == pytest.approx(0.015)
    assert seed0["model"]["previous_input"] is True
    assert seed0["model"]["file"].endswith("quadrotor_2d_residual_prev_input.npz")
    assert seed0["adapter_params"] == {"update_period": 2.0}
    assert [(r["seed"], r["variant"]) for r in seed0["records"]] == [(0, "nominal"), (0, "qzo_ff")]
    merged = tmp_path / "merged.json"
    _run_bench("mujoco_closed_loop.py", "--merge", *map(str, parts), "--out", str(merged))
    both = json.loads(merged.read_text())
    assert both["seeds"] == [0, 1]
    by = {(r["seed"], r["variant"]): r for r in both["records"]}
    nominal = [by[s, "nominal"]["rmse_last_10s"] for s in (0, 1)]
    assert nominal[0] != nominal[1]  # the seed drives the wind
    assert both["summaries"]["nominal"]["rmse_last_10s"]["mean"] == pytest.approx(sum(nominal) / 2, rel=1e-12)
    cut = [1 - by[s, "qzo_ff"]["rmse_last_10s"] / by[s, "nominal"]["rmse_last_10s"] for s in (0, 1)]
    assert both["cut"]["qzo_ff"]["per_seed"] == pytest.approx(cut, rel=1e-12)
    # The thrust lag is the plant's: without it the same seed flies otherwise; parts that differ in
    # their plant are not merged.
    no_lag = tmp_path / "no_lag.json"
    _run_bench("mujoco_closed_loop.py", *common, "--thrust-lag", "0", "--variants", "nominal", "--out", str(no_lag))
    unlagged = json.loads(no_lag.read_text())
    assert unlagged["plant"]["mujoco"]["thrust_lag"] == 0.0
    assert unlagged["records"][0]["rmse_last_10s"] != nominal[0]
    refused = subprocess.run([sys.executable, str(REPO / "bench" / "mujoco_closed_loop.py"), "--merge", str(parts[0]),
                              str(no_lag), "--out", str(tmp_path / "x.json")], capture_output=True, text=True,
                             timeout=120, check=False, cwd=REPO)
    assert refused.returncode != 0
    assert "differ in 'plant'" in refused.stderr


def test_load_writes_its_records(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    out = tmp_path / "load.json"
    done = _run_bench("load.py", "--robots", "1", "--seconds", "2", "--modes", "processes", "--out", str(out))
    records = read_records(out)
    assert [(r["mode"], r["robots"]) for r in records] == [("processes", 1)]
    r = records[0]
    assert {"held", "miss_rate", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "jitter_p99_ms",
            "cpu_cores", "machine_cpu_cores", "per_robot"} <= set(r)
    # Real time: whether the loop held depends on the machine, so only the bookkeeping is checked.
    [robot] = r["per_robot"]
    assert 0 < robot["steps"] <= 100  # 2 s at 50 Hz (fewer if the pole fell)
    assert r["checked_steps"] + r["startup_steps"] == robot["steps"]
    assert "holds" in done.stdout


def test_soak_writes_its_records(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    out = tmp_path / "soak.json"
    done = _run_bench("soak.py", "--sim-seconds", "2", "--sample-period", "0.2", "--out", str(out))
    [r] = read_records(out)
    assert r["ok"], r["problems"]
    assert r["steps"] == 100
    labels = {p["label"].rsplit("/", 1)[1] for p in r["processes"]}
    assert labels == {"plant", "disturbance_injector", "controller", "constraint_monitor", "recorder"}
    assert all(p["exit_code"] == 0 and p["tracebacks"] == 0 for p in r["processes"])
    assert r["bag"]["states"] == r["bag"]["expected_states"] == 101
    assert r["bag"]["gaps"] == 0
    assert "one simulated hour" in done.stdout
