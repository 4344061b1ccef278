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
    out = tmp_path / "mpc_solve.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "mpc_solve.py"), "--steps-scale", "0.02", "--repeats", "2",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads(out.read_text())
    solvers = {r["solver"] for r in records}
    assert solvers == {"rti_hpipm", "sqp_hpipm", "sqp_qrqp", "fatrop", "ipopt", "plain_opti_ipopt"}
    assert {r["system"] for r in records} == {"quadrotor_2d", "cartpole"}
    for r in records:
        assert r["horizon"] == 20
        assert r["repeats"] == 2
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["rmse"] >= 0


def _run_bench(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / name), *args], capture_output=True, text=True, timeout=600,
        check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_adapter_benches_write_their_records(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    mem = tmp_path / "mem.json"
    _run_bench("adapter_memory.py", "--depths", "2", "4", "--widths", "8", "--batches", "4", "--no-plot",
               "--out", str(mem))
    records = json.loads(mem.read_text())
    assert {r["method"] for r in records} == {"qzo_ff", "fg_fp32", "bp"}
    assert all(set(r) == {"method", "depth", "width", "batch", "extra_bytes"} for r in records)
    acc = tmp_path / "acc.json"
    _run_bench("adapter_accuracy.py", "--steps", "20", "--bp-steps", "10", "--episodes", "2", "--variants",
               "qzo_ff", "fg_fp32", "bp", "--out", str(acc))
    records = json.loads(acc.read_text())
    assert [r["method"] for r in records] == ["qzo_ff", "fg_fp32", "bp"]
    assert all(r["forward_passes"] > 0 and r["final_val_loss"] > 0 for r in records)
    loop = tmp_path / "loop.json"
    _run_bench("adapter_closed_loop.py", "--seconds", "1.0", "--variants", "nominal", "qzo_ff", "--out", str(loop))
    records = json.loads(loop.read_text())
    assert [r["variant"] for r in records] == ["nominal", "qzo_ff"]
    assert all({"rmse_last_10s", "violation_steps", "p99_solve_ms"} <= set(r) for r in records)


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
