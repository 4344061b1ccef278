"""A graph sweep on a real two-node Ray cluster: the same per-run metrics as the same sweep run serially.

The head and the worker are separate `ray start` processes (one CPU each) on 127.0.0.1 inside a
network namespace whose only interface is loopback (Ray 2.60's GCS and raylet listen on every
interface of their namespace and replace a 127.0.0.1 node address by the machine's own, so the
namespace is what keeps the cluster on loopback). Four cart-pole LQR runs, each from a start drawn
from its seed, run as real node processes over DDS, recorded into bags; runs land on both nodes.
Needs root (or CAP_NET_ADMIN) for the namespace; skips, saying why, where refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
PORT = 6399
# What must not depend on where or in which order a run ran (timings excluded).
DETERMINISTIC = ("steps", "episode_length", "tracking_rmse", "angle_rmse", "return", "rl_reward", "control_effort",
                 "failed_early", "draws")

pytest.importorskip("rclpy")
pytest.importorskip("ray")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)


# Ray's token authentication, with a token of this test run's own for the head, the worker and the drivers.
TOKEN = secrets.token_hex(32)


def _env() -> dict[str, str]:
    return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN,
                ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")


def _in_ns(ns: str, *cmd: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=sink, stderr=subprocess.STDOUT,
                                cwd=REPO, env=_env(), start_new_session=True)


def _run_in_ns(ns: str, *cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, cwd=REPO, env=_env(),
                          timeout=timeout, check=False)


def _alive_nodes(ns: str) -> int:
    probe = (f"import ray, logging; ray.init(address='127.0.0.1:{PORT}', logging_level=logging.ERROR, "
             "log_to_driver=False); print('nodes', sum(1 for n in ray.nodes() if n['Alive']))")
    done = _run_in_ns(ns, sys.executable, "-c", probe, timeout=60)
    for line in done.stdout.splitlines():
        if line.startswith("nodes "):
            return int(line.split()[1])
    return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback-only network namespace with a Ray head and a worker node; yields the namespace."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    ns = f"sws{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", ns)
    if made.returncode != 0:
        pytest.skip(f"this machine refuses network namespaces: {made.stderr.strip()}")
    procs: list[subprocess.Popen[bytes]] = []
    temp = Path("/tmp") / f"rs{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths must fit 107 bytes
    try:
        up = _ip("-n", ns, "link", "set", "lo", "up")
        if up.returncode != 0:
            pytest.skip(f"cannot bring up loopback in the namespace: {up.stderr.strip()}")
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--block"]
        procs.append(_in_ns(ns, str(RAY), "start", "--head", "--port", str(PORT), "--include-dashboard", "false",
                            "--temp-dir", str(temp), *common, log=tmp_path / "head.log"))
        deadline = time.monotonic() + 90
        while _alive_nodes(ns) < 1:
            assert time.monotonic() < deadline, (tmp_path / "head.log").read_text()
            time.sleep(1)
        procs.append(_in_ns(ns, str(RAY), "start", "--address", f"127.0.0.1:{PORT}", *common,
                            log=tmp_path / "worker.log"))
        while _alive_nodes(ns) < 2:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(1)
        yield ns
    finally:
        for proc in reversed(procs):
            _stop(proc)
        _ip("netns", "del", ns)
        shutil.rmtree(temp, ignore_errors=True)


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "lqr.yaml"
    spec.write_text(
        f"name: lqr_cluster\n"
        f"launch: {REPO / 'launch' / 'cartpole_lqr.launch.xml'}\n"
        "args: {duration: 2.0}\n"
        "seeds: [0, 1, 2, 3]\n"
        "randomize:\n"
        "  init: [0.1, 0.0, 0.05, 0.0]\n"
        "  params:\n"
        "    plant.model.pole_mass: {distrib: uniform, low: 0.08, high: 0.12}\n"
        "resources: {cpus_per_run: 1}\n"
        "timeout: 120\n"
    )
    return spec


def _records(folder: Path) -> dict[str, dict[str, object]]:
    data = json.loads((folder / "sweep.json").read_text())
    return {r["run"]: r for r in data["records"]}


def test_graph_sweep_on_two_ray_nodes_equals_the_serial_sweep(cluster: str, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    sweep = [sys.executable, "-m", "safe_ctrl_ros.sweep.cli", str(spec)]
    on_ray = _run_in_ns(cluster, *sweep, "--address", f"127.0.0.1:{PORT}", "--out", str(tmp_path / "ray"),
                        timeout=400)
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    serial = _run_in_ns(cluster, *sweep, "--serial", "--out", str(tmp_path / "serial"), timeout=400)
    assert serial.returncode == 0, serial.stdout + serial.stderr

    ray_runs, serial_runs = _records(tmp_path / "ray"), _records(tmp_path / "serial")
    assert sorted(ray_runs) == sorted(serial_runs) == [f"default/seed_{s:04d}" for s in range(4)]
    assert all(r["status"] == "ok" for r in [*ray_runs.values(), *serial_runs.values()])
    # Runs ran on both nodes of the cluster, in Ray worker processes (not the driver).
    assert len({r["node_id"] for r in ray_runs.values()}) == 2
    for run_id, rec in ray_runs.items():
        for key in DETERMINISTIC:
            assert rec[key] == serial_runs[run_id][key], (run_id, key)
    # The draws differ between seeds, so equal metrics mean each run did its own seed's run.
    assert len({r["tracking_rmse"] for r in ray_runs.values()}) == 4
    assert len({json.dumps(r["draws"], sort_keys=True) for r in ray_runs.values()}) == 4
    # Each run has its own folder with the bag, the plant's summary and the log, and its own domain.
    for seed in range(4):
        folder = tmp_path / "ray" / "runs" / "default" / f"seed_{seed:04d}"
        assert (folder / "bag" / "metadata.yaml").is_file()
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["sim_time_s"] == pytest.approx(2.0)
        assert "[plant]" in (folder / "log.txt").read_text()
    table = (tmp_path / "ray" / "table.md").read_text()
    assert "| default | 4 |" in table


def test_search_on_the_cluster_is_seeded_and_writes_the_best_params_file(cluster: str, tmp_path: Path) -> None:
    """Ray Tune + Optuna over the LQR's input weight, core runs on two seeds: the trials repeat, the
    best one is the lowest objective, which its configuration gives again when re-run, and the params
    file holds it."""
    import yaml

    from safe_ctrl_ros.sweep.search import trial_value
    from safe_ctrl_ros.sweep.spec import load_spec

    spec_file = tmp_path / "search.yaml"
    spec_file.write_text(
        f"launch: {REPO / 'launch' / 'cartpole_lqr.launch.xml'}\n"
        "args: {duration: 1.0}\n"
        "seeds: [0, 1]\n"
        "randomize: {init: [0.1, 0.0, 0.05, 0.0]}\n"
        "search:\n"
        "  space:\n"
        "    controller.lqr.R[0]: {distrib: loguniform, low: 0.01, high: 10.0}\n"
        "  metric: tracking_rmse\n"
        "  statistic: mean\n"
        "  trials: 3\n"
        "  seed: 5\n"
    )
    results = []
    for name in ("one", "two"):
        done = _run_in_ns(cluster, sys.executable, "-m", "safe_ctrl_ros.sweep.cli", str(spec_file), "--search",
                          "--mode", "core", "--address", f"127.0.0.1:{PORT}", "--out", str(tmp_path / name),
                          timeout=400)
        assert done.returncode == 0, done.stdout + done.stderr
        results.append(json.loads((tmp_path / name / "search" / "search.json").read_text()))
    configs = [[t["config"] for t in r["trials"]] for r in results]
    assert configs[0] == configs[1]  # the same seeded proposals, one trial at a time
    assert len({json.dumps(c) for c in configs[0]}) == 3
    first = results[0]
    objectives = [t["objective"] for t in first["trials"]]
    assert first["best"]["objective"] == min(objectives)
    best_r = first["best"]["config"]["controller.lqr.R[0]"]
    assert 0.01 <= best_r <= 10.0
    spec = load_spec(spec_file)
    assert spec.search is not None
    again = trial_value(spec, spec.search, first["best"]["config"], tmp_path / "again", "core")
    assert again["objective"] == first["best"]["objective"]
    params = yaml.safe_load((tmp_path / "one" / "search" / "best_params.yaml").read_text())
    assert params["/**/controller"]["ros__parameters"]["lqr"]["R"] == [best_r]
    assert params["/**/controller"]["ros__parameters"]["lqr"]["Q"] == [1.0, 1.0, 10.0, 1.0]  # the rest kept


def test_a_core_run_gives_the_graph_runs_figures(tmp_path: Path) -> None:
    """The cart-pole NMPC run of config/sweeps/cartpole_nmpc.yaml's first seed (drawn start, pole mass
    and push time; monitor reactions and fallbacks) in core mode and as the graph: the same tracking
    RMSE, violations and fallbacks."""
    from safe_ctrl_ros.sweep.execute import execute_one
    from safe_ctrl_ros.sweep.plan import plan_run
    from safe_ctrl_ros.sweep.spec import load_spec

    spec = load_spec(REPO / "config" / "sweeps" / "cartpole_nmpc.yaml")
    run = plan_run(spec, "nmpc", 0).to_json()
    core = execute_one(run, str(tmp_path / "core"), "core", 120)
    graph = execute_one(run, str(tmp_path / "graph"), "graph", 120)
    assert core["status"] == graph["status"] == "ok", (core.get("reason"), graph.get("reason"))
    assert graph["violation_steps"] > 0  # the push drives the pole past its bound: the monitor reacts
    for key in ("steps", "episode_length", "tracking_rmse", "angle_rmse", "violation_steps", "fallback_steps",
                "violation_magnitude_max"):
        assert core[key] == graph[key], key
    assert core["return"] == pytest.approx(graph["return"], rel=1e-3)
