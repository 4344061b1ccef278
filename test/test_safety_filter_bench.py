"""bench/safety_filter.py runs on a scenario launch file and writes the documented records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYS = {"scenario", "controller", "filter", "seed", "violation_steps", "max_violation", "mean_intervention",
        "max_intervention", "rmse", "p50_filter_ms", "p99_filter_ms", "max_filter_ms", "infeasible_steps",
        "unreported_infeasible", "steps"}


def test_bench_writes_records_and_summaries(tmp_path: Path) -> None:
    out = tmp_path / "sf.json"
    res = subprocess.run(
        [sys.executable, "bench/safety_filter.py", "--scenario", "launch/cartpole_safety_filter.launch.xml",
         "--seeds", "2", "--seconds", "1.0", "--filters", "none", "cbf", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads(out.read_text())
    records = data["records"]
    assert [(r["filter"], r["seed"]) for r in records] == [("none", 0), ("cbf", 0), ("none", 1), ("cbf", 1)]
    for r in records:
        assert set(r) == KEYS
        assert r["scenario"] == "cartpole_safety_filter"
        assert r["controller"] == "lqr"
        assert r["steps"] == 50
    for r in records:
        if r["filter"] == "none":
            # the aggressive LQR leaves the pole limits in its first second, and nothing reports it
            assert r["violation_steps"] == r["unreported_infeasible"]
            assert r["max_violation"] > 0.05
            assert r["mean_intervention"] == 0.0
        else:
            assert r["violation_steps"] == 0
            assert r["max_violation"] == 0.0
    s = data["summaries"]["cartpole_safety_filter"]
    assert s["cbf"]["runs"] == 2
    assert s["cbf"]["runs_violating"] == 0
    assert s["none"]["runs_violating"] == 2
    assert s["cbf"]["rmse_ratio_all"]["n"] == 2
    assert data["scenarios"][0]["disturbances"].endswith("config/disturbances/cartpole_pushes.yaml")


def test_bench_measures_the_offset_free_mpsc_margin_on_the_quadrotor(tmp_path: Path) -> None:
    """The quadrotor scenario's MPSC is offset-free: the bench measures how far its model's one-step
    error moves from the last one over the horizon (held-out seed) and builds the filter with it; the
    first step (nothing measured yet) is reported infeasible, nothing is unreported."""
    out = tmp_path / "sf.json"
    res = subprocess.run(
        [sys.executable, "bench/safety_filter.py", "--scenario", "launch/quadrotor_2d_safety_filter.launch.xml",
         "--residual", "config/models/quadrotor_2d_residual.npz", "--seeds", "1", "--seconds", "1.0",
         "--filters", "mpsc", "--timing-repeats", "0", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads(out.read_text())
    scen = data["scenarios"][0]
    err = np.array(scen["mpsc_model_error"])
    assert err.shape == (6,)
    assert np.all(err >= 0)
    # z_dot: the 30% heavier vehicle's error moves with the thrust, but by far less than the error itself.
    assert 0.0 < err[3] < scen["model_error"][3]
    design = scen["mpsc_design"]
    assert design["u_s"] == design["u_nominal"]  # planned with the nominal model (use_residual: false)
    (r,) = data["records"]
    assert r["violation_steps"] == 0
    assert r["infeasible_steps"] >= 1
    assert r["unreported_infeasible"] == 0
