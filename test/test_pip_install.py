"""`pip install .` into a fresh virtual environment without ROS gives working analysis tools.

The package's own files are copied (tracked and not ignored: what a clone of this tree holds);
pip resolves the install_requires from the package index (its cache makes a re-run quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_bag_report import write_run
from test_retrain import MODEL, PARAMS, write_bag

REPO = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    """The environment without this venv's ROS wheel paths, so nothing of ROS leaks in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH",
                                                             "CMAKE_PREFIX_PATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pip")
    src = root / "src"
    listing = ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listing, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    env_dir = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(env_dir)], check=True, env=_clean_env())
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, str(src), "-c", str(REPO / "requirements" / "constraints.txt")],
                          capture_output=True, text=True, timeout=900, check=False, env=_clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir / "bin"


def test_the_install_has_no_ros(installed: Path) -> None:
    done = subprocess.run([str(installed / "python"), "-c", "import importlib.util as u; "
                           "print(u.find_spec('rclpy') is None, u.find_spec('torch') is None)"],
                          capture_output=True, text=True, check=True, env=_clean_env())
    assert done.stdout.split() == ["True", "True"]


def test_report_runs_from_the_pip_install(installed: Path, tmp_path: Path) -> None:
    write_run(tmp_path / "bag", violate_at=1.0)
    out = tmp_path / "report.json"
    done = subprocess.run([str(installed / "safe-ctrl-report"), str(tmp_path / "bag"), "--json", str(out)],
                          capture_output=True, text=True, timeout=300, check=False, env=_clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads(out.read_text())
    assert row["violation_steps"] == 1


def test_retrain_runs_from_the_pip_install(installed: Path, tmp_path: Path) -> None:
    write_bag(tmp_path / "run")
    out_json = tmp_path / "r.json"
    done = subprocess.run([str(installed / "safe-ctrl-retrain"), str(tmp_path / "run"), "--model-file", str(MODEL),
                           "--params-file", str(PARAMS), "--out", str(tmp_path / "new.npz"), "--json", str(out_json)],
                          capture_output=True, text=True, timeout=600, check=False, env=_clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out_json.read_text())["result"]
    assert result["best_val_loss"] < result["start_val_loss"]
    assert (tmp_path / "new.npz").is_file()
