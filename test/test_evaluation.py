"""Statistics over seeds, provenance of result files, and figures quoted in the docs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.evaluation.provenance import provenance
from safe_ctrl_ros.evaluation.quotes import QuoteError, check, render, rewrite, select

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def test_summary_matches_hand_computed_t_interval() -> None:
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(math.sqrt(5.0 / 3.0))
    half = 3.182446305284263 * math.sqrt(5.0 / 3.0) / 2.0  # t(0.975, 3) * s / sqrt(n)
    assert s["ci95_low"] == pytest.approx(2.5 - half, rel=1e-9)
    assert s["ci95_high"] == pytest.approx(2.5 + half, rel=1e-9)
    assert s["worst"] == 4.0
    assert s["best"] == 1.0
    assert s["cvar50"] == pytest.approx(3.5)  # mean of the worse half: 3 and 4


def test_summary_worst_follows_the_direction() -> None:
    s = stats.summarize([0.2, 0.5, 0.9], worse="lower")
    assert s["worst"] == 0.2
    assert s["cvar50"] == pytest.approx(0.35)  # ceil(1.5) = 2 worst: 0.2 and 0.5


def test_summary_refuses_non_finite_and_empty() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        stats.summarize([1.0, math.nan])
    with pytest.raises(ValueError, match="no values"):
        stats.summarize([])


def test_paired_ratio_is_per_seed() -> None:
    s = stats.paired([2.0, 3.0], [1.0, 6.0])
    assert s["mean"] == pytest.approx(1.25)  # 2/1 and 3/6, not 5/7
    with pytest.raises(ValueError, match="seeds"):
        stats.paired([1.0], [1.0, 2.0])


def test_provenance_names_commit_machine_versions_and_command() -> None:
    p = provenance(["bench/mpc_solve.py", "--quick"])
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert p["commit"] == head.stdout.strip()
    assert p["command"] == "tools/run.sh python bench/mpc_solve.py --quick"
    assert p["machine"]["cores"] >= 1
    assert p["machine"]["cpu_model"]
    assert p["versions"]["numpy"] == __import__("numpy").__version__


def test_quote_selects_formats_and_detects_drift(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "r.json").write_text(json.dumps({
        "summaries": {"bp": {"mean": 0.012345}},
        "records": [{"solver": "a", "p50_ms": 0.5, "n": 3}, {"solver": "b", "p50_ms": 1.25, "n": 4}],
    }))
    assert select(json.loads((results / "r.json").read_text()), "records[solver=b].p50_ms") == 1.25
    assert render(2048, "/1024:.1f") == "2.0"
    assert render(0.256, "*100:.0f") == "26"
    assert render(4, "g") == "4"
    doc = tmp_path / "doc.md"
    doc.write_text("mean <!--q r.json summaries.bp.mean .4f-->0.0123<!--/q--> m, "
                   "b takes <!--q r.json records[solver=b].p50_ms .2f-->1.20<!--/q--> ms\n")
    problems = check(doc, results)
    assert len(problems) == 1
    assert "says '1.20', the file says '1.25'" in problems[0]
    assert rewrite(doc, results) == 1
    assert check(doc, results) == []
    assert "-->1.25<!--/q-->" in doc.read_text()


def test_quote_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"records": [{"k": 1}, {"k": 1}]}))
    data = json.loads((tmp_path / "r.json").read_text())
    with pytest.raises(QuoteError, match="matches 2 elements"):
        select(data, "records[k=1]")
    with pytest.raises(QuoteError, match="'nope' not found"):
        select(data, "nope")
    doc = tmp_path / "d.md"
    doc.write_text("<!--q missing.json a-->1<!--/q-->")
    assert "does not exist" in check(doc, tmp_path)[0]


def test_every_figure_quoted_in_readme_and_docs_matches_its_results_file() -> None:
    done = subprocess.run([sys.executable, str(REPO / "tools" / "quote_figures.py")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_results_file_says_what_produced_it(path: Path) -> None:
    data = json.loads(path.read_text())
    p = data["provenance"]
    assert len(p["commit"]) == 40
    assert p["command"].startswith("tools/run.sh ")
    assert {"cores", "cpu_model"} <= set(p["machine"])
    assert "numpy" in p["versions"]
    assert isinstance(data["records"], list)
