"""The adapter trains on targets with the NMPC's disturbance estimate removed (issue #18): the
supervisor reports the estimate its command was planned with, OnlineAdapter.add removes exactly the
estimate it is handed, the rounds pair each transition with the controller status of its own state
stamp and wait for it, and the offline re-trainer reads the estimates from a bag (old bags: none)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.heavy_flight import DT, DT_NS, heavy_run
from safe_ctrl_ros import systems
from safe_ctrl_ros.bag.retrain import main, node_params, read_transitions
from safe_ctrl_ros.bag.types import msg_dir, typestore
from safe_ctrl_ros.bag.writer import BagWriter
from safe_ctrl_ros.control import LqrController, Nmpc, NmpcConfig
from safe_ctrl_ros.control.supervisor import SupervisedController
from safe_ctrl_ros.learning.adapter import OnlineAdapter
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.offline import retrain
from safe_ctrl_ros.learning.rounds import Rounds
from safe_ctrl_ros.learning.settings import AdapterSettings, adapter_settings
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray
from safe_ctrl_ros.tasks import make_task

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
PARAMS = REPO / "config" / "quadrotor_2d_flagship.yaml"


def estimates(states: list[tuple[int, FloatArray]]) -> dict[int, FloatArray]:
    """A distinct estimate per stamp (on x_dot and z_dot, as the flagship's), so a pairing off by a step
    shows."""
    out = {}
    for k, (stamp, _) in enumerate(states):
        d = np.zeros(6)
        d[1], d[3] = 1e-3 * np.sin(0.1 * k), -5e-4 + 1e-5 * k
        out[stamp] = d
    return out


def settings(**values: object) -> AdapterSettings:
    return adapter_settings({**node_params(PARAMS, "adapter"), "model_file": str(MODEL), "batch_size": 32,
                             "min_val": 10, "update_period": 0.2, "round_delay": 0.2, "steps_per_update": 10,
                             **values})


def core(s: AdapterSettings) -> OnlineAdapter:
    return OnlineAdapter(load_model(MODEL, 6, 2), systems.make("quadrotor_2d"), s.config)


def nominal_targets(adapter: OnlineAdapter, x: FloatArray, u: FloatArray, xn: FloatArray) -> FloatArray:
    return xn - np.asarray(adapter.step_fn(x, u, np.zeros(WRENCH_SIZE))).reshape(-1)


# --- OnlineAdapter.add --------------------------------------------------------------------------------
def test_add_removes_exactly_the_estimate_it_is_handed() -> None:
    states, cmds = heavy_run(12)
    d = estimates(states)
    plain, removed = core(settings()), core(settings())
    for (s, x), (_, xn) in itertools.pairwise(states):
        assert plain.add(x, cmds[s], xn)
        assert removed.add(x, cmds[s], xn, disturbance=d[s])
    # 11 transitions, every 5th held out: rows in order in both buffers
    for buf in ("train_buf", "val_buf"):
        a, b = getattr(plain, buf), getattr(removed, buf)
        assert a.count == b.count > 0
    rows = [(s, x, xn) for (s, x), (_, xn) in itertools.pairwise(states)]
    train = [r for i, r in enumerate(rows, 1) if i % 5]
    for j, (s, x, xn) in enumerate(train):
        expected = nominal_targets(removed, x, cmds[s], xn) - d[s]
        np.testing.assert_allclose(removed.train_buf.y[j], expected, rtol=0, atol=1e-15)
        np.testing.assert_allclose(plain.train_buf.y[j] - removed.train_buf.y[j], d[s], rtol=0, atol=1e-15)
    # The checks' window holds the same next states the targets were taken from: x_k+1 - d_k.
    _, _, recent_next = removed.recent.ordered()
    np.testing.assert_array_equal(recent_next, np.array([xn - d[s] for s, _, xn in rows]))


def test_add_with_an_empty_or_no_estimate_removes_nothing_and_rejects_a_wrong_one() -> None:
    states, cmds = heavy_run(3)
    (s0, x0), (_, x1) = states[0], states[1]
    a, b = core(settings()), core(settings())
    assert a.add(x0, cmds[s0], x1)
    assert b.add(x0, cmds[s0], x1, disturbance=np.zeros(0))
    np.testing.assert_array_equal(a.train_buf.y[:1], b.train_buf.y[:1])
    assert not b.add(x0, cmds[s0], x1, disturbance=np.zeros(4))  # not one per state
    assert not b.add(x0, cmds[s0], x1, disturbance=np.full(6, np.nan))
    assert b.seen == 1


# --- the rounds -----------------------------------------------------------------------------------------
def filled(s: AdapterSettings, disturbances: bool, steps: int = 40,
           lose: int | None = None) -> tuple[Rounds, dict[str, Any]]:
    states, cmds = heavy_run(steps)
    d = estimates(states)
    rounds = Rounds(core(s), s.schedule(), s.steps_per_update, s.policy, disturbances=disturbances)
    for stamp, x in states:
        rounds.state(stamp, x)
        rounds.command(stamp, cmds[stamp])
        if stamp != lose:
            rounds.disturbance(stamp, d[stamp])
    return rounds, {"states": dict(states), "cmds": cmds, "d": d}


def test_each_transition_gets_the_estimate_of_its_own_state_stamp() -> None:
    rounds, data = filled(settings(), disturbances=True)
    taken = rounds.take()
    assert taken.data_end_ns == 200_000_000
    assert taken.missing == 0
    assert [nxt for nxt, *_ in taken.transitions] == list(range(DT_NS, 200_000_001, DT_NS))
    for nxt, x, _u, _xn in taken.transitions:
        np.testing.assert_array_equal(taken.disturbance[nxt], data["d"][nxt - DT_NS])  # d_k, not d_k+1
        np.testing.assert_array_equal(x, data["states"][nxt - DT_NS])
    # and what reaches the buffers: x_k+1 - d_k - F(x_k, u_k)
    target = rounds.core
    taken.added_to(target)
    nxt, x, u, xn = taken.transitions[0]
    expected = nominal_targets(target, x, u, xn) - data["d"][0]
    np.testing.assert_allclose(target.train_buf.y[0], expected, rtol=0, atol=1e-15)


def test_a_round_waits_for_the_status_of_its_last_step() -> None:
    s = settings()
    states, cmds = heavy_run(12)
    d = estimates(states)
    rounds = Rounds(core(s), s.schedule(), s.steps_per_update, s.policy, disturbances=True)
    for stamp, x in states:  # states to 0.22 s and their commands; statuses only up to 0.16 s
        rounds.state(stamp, x)
        rounds.command(stamp, cmds[stamp])
        if stamp <= 160_000_000:
            rounds.disturbance(stamp, d[stamp])
    assert not rounds.complete(with_verdicts=False)  # the status of 0.18 s (the step into 0.2 s) is not in
    rounds.disturbance(180_000_000, d[180_000_000])
    assert rounds.complete(with_verdicts=False)
    # Without the setting the statuses are no part of the data: complete on states and commands alone.
    plain = Rounds(core(s), s.schedule(), s.steps_per_update, s.policy, disturbances=False)
    for stamp, x in states:
        plain.state(stamp, x)
        plain.command(stamp, cmds[stamp])
    assert plain.complete(with_verdicts=False)
    assert plain.take().disturbance == {}


def test_a_lost_status_is_a_missing_step_never_a_zero_estimate() -> None:
    rounds, _data = filled(settings(), disturbances=True, lose=60_000_000)
    assert rounds.complete(with_verdicts=False)  # newer statuses came: the lost one is not waited for
    taken = rounds.take()
    assert taken.missing == 1
    assert 80_000_000 not in {nxt for nxt, *_ in taken.transitions}  # the step from 0.06 s
    assert len(taken.transitions) == 9


def test_kept_targets_when_the_setting_is_off() -> None:
    off = settings(**{"targets.remove_disturbance": False})
    assert not off.remove_disturbance
    assert settings().remove_disturbance
    rounds, _data = filled(off, disturbances=off.remove_disturbance)
    taken = rounds.take()
    taken.added_to(rounds.core)
    _nxt, x, u, xn = taken.transitions[0]
    np.testing.assert_allclose(rounds.core.train_buf.y[0], nominal_targets(rounds.core, x, u, xn), rtol=0, atol=0)


# --- the supervisor ---------------------------------------------------------------------------------------
def supervised(gain: float) -> tuple[SupervisedController, Nmpc]:
    """The cart-pole NMPC with the estimate, and an identical twin to compare its NmpcResult with."""
    model = systems.make("cartpole")
    task = make_task(model, None)
    lqr = LqrController(model, [1, 1, 10, 1], 0.1, DT)

    def nmpc() -> Nmpc:
        return Nmpc(model, task, NmpcConfig(horizon=10, Q=[1, 1, 10, 1], disturbance_gain=gain))

    return SupervisedController(model, task, lqr, nmpc()), nmpc()


def test_the_step_report_carries_the_estimate_the_solve_used_and_zeros_on_a_fallback() -> None:
    sup, twin = supervised(0.5)
    model = sup.model
    x = np.array([0.0, 0.0, 0.05, 0.0])
    push = np.array([0.0, 0.004, 0.0, -0.006])  # an offset the nominal model does not have
    seen = []
    for k in range(8):
        report = sup.compute(x, k * DT)
        result = twin.solve(x, k * DT)
        assert not report.fallback_active
        assert report.disturbance.shape == (4,)
        np.testing.assert_array_equal(report.disturbance, result.disturbance)
        seen.append(report.disturbance.copy())
        x = model.step(x, report.u, DT, 10) + push
    assert np.all(seen[0] == 0)  # no update before the first step
    # after the first update: gain * offset on the estimated states (the cart-pole's velocity x_dot),
    # 0 elsewhere (theta_dot's offset is not estimated)
    assert twin.disturbance_states == (1,)
    np.testing.assert_allclose(seen[1], [0.0, 0.5 * push[1], 0.0, 0.0], rtol=0, atol=1e-9)
    assert abs(seen[-1][1]) > abs(seen[1][1])
    fallback = sup.compute(x, 8 * DT, force_fallback="safety request: test")
    assert fallback.fallback_active
    np.testing.assert_array_equal(fallback.disturbance, np.zeros(4))
    bad = sup.compute([0.0, np.nan, 0.0, 0.0], 9 * DT)
    np.testing.assert_array_equal(bad.disturbance, np.zeros(4))


def test_no_estimate_in_use_is_an_empty_report() -> None:
    sup, _ = supervised(0.0)
    assert sup.compute([0.0, 0.0, 0.05, 0.0], 0.0).disturbance.shape == (0,)
    model = sup.model
    lqr_only = SupervisedController(model, make_task(model, None), sup.lqr)
    assert lqr_only.compute([0.0, 0.0, 0.05, 0.0], 0.0).disturbance.shape == (0,)


# --- the offline re-trainer on a bag ------------------------------------------------------------------------
# ControllerStatus as it was before the field: every line up to fallbacks_total.
_LINES = (msg_dir() / "ControllerStatus.msg").read_text().splitlines()
_LAST = next(i for i, line in enumerate(_LINES) if line.startswith("uint32 fallbacks_total"))
OLD_STATUS = "\n".join(_LINES[: _LAST + 1])


def write_bag(path: Path, steps: int, old: bool = False) -> dict[int, FloatArray]:
    """State, command and controller status of a flight; `old`: ControllerStatus as before the field."""
    folder = None
    if old:  # this package's messages, ControllerStatus as before the field
        folder = path.parent / "old_msg"
        folder.mkdir()
        for file in msg_dir().glob("*.msg"):
            (folder / file.name).write_text(OLD_STATUS if file.stem == "ControllerStatus" else file.read_text())
    ts = typestore(folder)
    T = ts.types
    writer = BagWriter(path, ts)
    for topic, kind in (("state", "State"), ("cmd", "Command"), ("controller/status", "ControllerStatus")):
        writer.add_topic(f"/q/{topic}", f"safe_ctrl_ros/msg/{kind}")
    states, cmds = heavy_run(steps)
    d = estimates(states)
    for stamp, x in states:
        h = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                                     frame_id="")
        fields: dict[str, Any] = {"header": h, "controller": "nmpc", "solver": "rti_hpipm", "solve_time_ms": 1.0,
                                  "iterations": 1, "solver_status": "ok", "cost": 0.0, "max_slack": 0.0,
                                  "model_version": 0, "fallback_active": False, "fallback_reason": "",
                                  "fallbacks_total": 0}
        if not old:
            fields["disturbance_estimate"] = d[stamp]
            fields["sync_breaks_total"] = 0
        msgs = (("state", T["safe_ctrl_ros/msg/State"](header=h, x=x)),
                ("cmd", T["safe_ctrl_ros/msg/Command"](header=h, u=cmds[stamp])),
                ("controller/status", T["safe_ctrl_ros/msg/ControllerStatus"](**fields)))
        for name, msg in msgs:
            writer.write(f"/q/{name}", stamp, bytes(ts.serialize_cdr(msg, msg.__msgtype__)))
    writer.close()
    return d


def test_retrain_reads_the_estimates_and_reproduces_the_rounds(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "new"
    d = write_bag(bag, 150)
    rec = read_transitions(bag, None, None)
    assert rec.status_topic == "/q/controller/status"
    assert rec.disturbances is not None
    assert sorted(rec.disturbances) == sorted(d)
    for stamp, value in d.items():
        np.testing.assert_array_equal(rec.disturbances[stamp], value)
    s = settings()
    start, nominal = load_model(MODEL, 6, 2), systems.make("quadrotor_2d")
    result = retrain(rec.states, rec.commands, start, nominal, s, rec.verdicts, rec.disturbances)
    assert result.disturbance_removed
    # The same rounds by hand, as the node runs them (statuses included).
    rounds = Rounds(core(s), s.schedule(), s.steps_per_update, s.policy, disturbances=True)
    for stamp, x in rec.states:
        rounds.state(stamp, x)
        rounds.command(stamp, rec.commands[stamp])
        rounds.disturbance(stamp, d[stamp])
    while (nxt := rounds.next_round()) is not None and nxt[0] <= rec.states[-1][0]:
        rounds.run(rounds.take())
    assert result.versions == len(rounds.core.history) >= 1
    assert result.best is not None
    assert result.best.int_weights().tolist() == rounds.core.history[-1].net.int_weights().tolist()
    # The estimate matters: kept targets (the setting off, or no estimates) train other weights.
    kept = retrain(rec.states, rec.commands, start, nominal, settings(**{"targets.remove_disturbance": False}),
                   rec.verdicts, rec.disturbances)
    assert not kept.disturbance_removed
    none = retrain(rec.states, rec.commands, start, nominal, s, rec.verdicts, None)
    assert kept.best is not None
    assert none.best is not None
    assert kept.best.int_weights().tolist() == none.best.int_weights().tolist()
    assert kept.best.int_weights().tolist() != result.best.int_weights().tolist()
    assert main([str(bag), "--model-file", str(MODEL), "--params-file", str(PARAMS)]) == 0
    assert "targets: the controller's disturbance estimate removed, from /q/controller/status (150 of 150" in (
        capsys.readouterr().out)


def test_an_old_bag_without_the_field_retrains_with_nothing_removed(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "old"
    write_bag(bag, 60, old=True)
    rec = read_transitions(bag, None, None)
    assert rec.disturbances is None
    assert rec.status_topic == ""
    result = retrain(rec.states, rec.commands, load_model(MODEL, 6, 2), systems.make("quadrotor_2d"), settings(),
                     rec.verdicts, rec.disturbances)
    assert not result.disturbance_removed
    assert result.transitions == 59
    assert result.skipped == 0
    assert main([str(bag), "--model-file", str(MODEL), "--params-file", str(PARAMS)]) == 0
    assert "targets: nothing removed: the bag has no controller status with disturbance_estimate" in (
        capsys.readouterr().out)
