"""bench/safety_filter.py runs on a scenario launch file and writes the documented records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
