"""Offline re-training of the adapter from recorded transitions (core and safe-ctrl-retrain on a bag)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.heavy_flight import DT, heavy_run
from safe_ctrl_ros import systems
from safe_ctrl_ros.bag.retrain import main, node_params
from safe_ctrl_ros.bag.types import typestore
from safe_ctrl_ros.bag.writer import BagWriter
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.offline import retrain
from safe_ctrl_ros.learning.settings import adapter_settings

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
PARAMS = REPO / "config" / "quadrotor_2d_flagship.yaml"


def test_retraining_reduces_the_validation_loss_deterministically() -> None:
    states, cmds = heavy_run()
    nominal = systems.make("quadrotor_2d")
    settings = adapter_settings({**node_params(PARAMS, "adapter"), "model_file": str(MODEL)})
    first = retrain(states, cmds, load_model(MODEL, 6, 2), nominal, settings)
    again = retrain(states, cmds, load_model(MODEL, 6, 2), nominal, settings)
    assert first.transitions == len(states) - 1
    assert first.versions > 0
    assert first.best is not None
    assert first.best_val_loss < 0.9 * first.start_val_loss
    assert [r.val_loss for r in first.rounds] == [r.val_loss for r in again.rounds]  # deterministic
    # The adapter's measurement (learning/memory.py) of its trainer: the same on both runs, and the
    # figure of a QZO-FF step on this model at batch 128 (bench/results/adapter_memory.json: ~10 kB).
    assert first.memory_bytes == pytest.approx(again.memory_bytes, rel=0.05)
    assert 5_000 < first.memory_bytes < 20_000
    # The rounds run on the recording's clock: one per update_period once the buffers are ready.
    gaps = [b.t - a.t for a, b in zip(first.rounds, first.rounds[1:], strict=False)]
    assert gaps == pytest.approx([settings.update_period] * len(gaps))


def test_the_reported_losses_are_the_integer_models() -> None:
    """retrain's validation losses come from the 16w8a integer pass: recomputed with the plain-int
    reference (helpers/int_reference.py) on the same validation transitions they agree bit for bit,
    which a float evaluation of the network would not."""
    from helpers import int_reference
    from safe_ctrl_ros.learning.adapter import OnlineAdapter
    from safe_ctrl_ros.learning.data import normalized_mse

    states, cmds = heavy_run(300)
    nominal = systems.make("quadrotor_2d")
    settings = adapter_settings({**node_params(PARAMS, "adapter"), "model_file": str(MODEL)})
    start = load_model(MODEL, 6, 2)
    result = retrain(states, cmds, start, nominal, settings)
    assert result.best is not None
    # The validation transitions retrain's adapter holds: the same transitions, fed in the same order.
    feed = OnlineAdapter(load_model(MODEL, 6, 2), nominal, settings.config)
    for (_, x), (stamp, x_next) in itertools.pairwise(states):
        feed.add(x, cmds[stamp - round(DT * 1e9)], x_next)
    val = feed.val_buf.batch()
    for net, reported in ((start.net, result.start_val_loss), (result.best, result.best_val_loss)):
        integer = np.array(int_reference.forward_net(net, val.x, val.u))
        assert normalized_mse(integer, val.target, start.loss_scale) == reported
        assert normalized_mse(net.forward_float(val.x, val.u), val.target, start.loss_scale) != reported


def test_retrain_rejects_mismatched_inputs() -> None:
    nominal = systems.make("quadrotor_2d")
    settings = adapter_settings({"dt": 0.01})
    with pytest.raises(ConfigError, match=r"dt=0\.02"):
        retrain(heavy_run(50)[0], heavy_run(50)[1], load_model(MODEL), nominal, settings)
    with pytest.raises(ConfigError, match="no states"):
        retrain([], {}, load_model(MODEL), nominal, adapter_settings({}))
    with pytest.raises(ConfigError, match="method"):
        adapter_settings({"method": "sgd"})


def write_bag(path: Path) -> None:
    ts = typestore()
    T = ts.types
    writer = BagWriter(path, ts)
    writer.add_topic("/q/state", "safe_ctrl_ros/msg/State")
    writer.add_topic("/q/cmd", "safe_ctrl_ros/msg/Command")
    states, cmds = heavy_run(400)
    for stamp, x in states:
        h = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                                     frame_id="")
        state = T["safe_ctrl_ros/msg/State"](header=h, x=x)
        cmd = T["safe_ctrl_ros/msg/Command"](header=h, u=cmds[stamp])
        writer.write("/q/state", stamp, bytes(ts.serialize_cdr(state, state.__msgtype__)))
        writer.write("/q/cmd", stamp, bytes(ts.serialize_cdr(cmd, cmd.__msgtype__)))
    writer.close()


def test_cli_on_a_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "run"
    write_bag(bag)
    out_model, out_json = tmp_path / "new.npz", tmp_path / "r.json"
    code = main([str(bag), "--model-file", str(MODEL), "--params-file", str(PARAMS), "--set", "trainer.lr=0.002",
                 "--out", str(out_model), "--json", str(out_json)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "399 transitions from /q/state + /q/cmd" in text
    doc = json.loads(out_json.read_text())
    assert doc["settings"]["trainer.lr"] == "0.002"
    assert doc["result"]["versions"] > 0
    assert doc["result"]["best_val_loss"] < doc["result"]["start_val_loss"]
    new = load_model(out_model, 6, 2)
    assert not np.array_equal(new.net.int_weights(), load_model(MODEL).net.int_weights())
    assert new.meta["retrained_from"] == str(bag)

    assert main([str(bag), "--model-file", str(MODEL), "--set", "trainer.lrr=1"]) == 2
    assert "--set expects NAME=VALUE" in capsys.readouterr().err
    assert main([str(bag), "--model-file", str(MODEL), "--state-topic", "/nope"]) == 2
    assert "'/nope' is not in the bag" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--model-file", str(MODEL)]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- the round loop shared with the adapter node (safe_ctrl_ros.learning.rounds) -------------------
def _rounds(settings_values: dict[str, object]) -> tuple[object, object]:
    from safe_ctrl_ros.learning.adapter import OnlineAdapter
    from safe_ctrl_ros.learning.rounds import Rounds

    settings = adapter_settings({**node_params(PARAMS, "adapter"), "model_file": str(MODEL), **settings_values})
    core = OnlineAdapter(load_model(MODEL, 6, 2), systems.make("quadrotor_2d"), settings.config)
    return Rounds(core, settings.schedule(), settings.steps_per_update, settings.policy), settings


def test_rounds_depend_on_stamps_not_on_arrival_order() -> None:
    """The node gets states and commands in any order, re-sent, interleaved with its rounds: each round
    still trains on the transitions up to its data end, in stamp order, and gives the same versions."""
    states, cmds = heavy_run(400)
    ordered, _ = _rounds({})
    for stamp, x in states:
        ordered.state(stamp, x)  # type: ignore[attr-defined]
        ordered.command(stamp, cmds[stamp])  # type: ignore[attr-defined]
    shuffled, _ = _rounds({})
    rng = np.random.default_rng(1)
    parts = [("s", s, x) for s, x in states] + [("c", s, u) for s, u in cmds.items()]
    parts += [parts[i] for i in rng.integers(0, len(parts), 100)]  # re-sends
    order = rng.permutation(len(parts))
    # Arrivals in random order, but a round only once everything up to its end is in (as in lockstep).
    results = []
    for i in order:
        kind, stamp, v = parts[i]
        (shuffled.state if kind == "s" else shuffled.command)(stamp, v)  # type: ignore[attr-defined]
    while shuffled.next_round()[0] <= states[-1][0]:  # type: ignore[attr-defined]
        assert shuffled.complete(with_verdicts=False)  # type: ignore[attr-defined]
        results.append(shuffled.run(shuffled.take()))  # type: ignore[attr-defined]
    expected = []
    while ordered.next_round()[0] <= states[-1][0]:  # type: ignore[attr-defined]
        expected.append(ordered.run(ordered.take()))  # type: ignore[attr-defined]
    assert [(r.outcome, r.version, r.val_loss, r.transitions) for r in results] == [
        (r.outcome, r.version, r.val_loss, r.transitions) for r in expected]
    assert [r.due_ns - r.data_end_ns for r in results] == [500_000_000] * len(results)
    assert sum(r.version > 0 and r.outcome == "accepted" for r in results) >= 1
    assert results[0].transitions == 25  # the 25 transitions into 0.02 .. 0.5 s


def test_a_lost_state_is_counted_missing() -> None:
    states, cmds = heavy_run(60)
    rounds, _ = _rounds({})
    for stamp, x in states:
        if stamp != 10 * round(DT * 1e9):  # state 10 lost: the transitions into and out of it are missing
            rounds.state(stamp, x)  # type: ignore[attr-defined]
        rounds.command(stamp, cmds[stamp])  # type: ignore[attr-defined]
    first = rounds.run(rounds.take())  # type: ignore[attr-defined]
    assert (first.transitions, first.missing) == (23, 2)


def test_retrain_replays_the_rollback_and_freeze_policy() -> None:
    """Violations that rise after an update (the monitor's verdicts, by stamp) roll it back at the first
    round whose data cover `rollback.window` states after its due; a safety request freezes a round."""
    states, cmds = heavy_run(600)
    nominal = systems.make("quadrotor_2d")
    values = {**node_params(PARAMS, "adapter"), "model_file": str(MODEL), "rollback.window": 10}
    settings = adapter_settings(values)
    plain = retrain(states, cmds, load_model(MODEL, 6, 2), nominal, settings)
    first = next(r for r in plain.rounds if r.version)
    due = round((first.t + settings.round_delay) * 1e9)
    dt = round(DT * 1e9)
    # Violations from the first version's due on, and with them the monitor's safety request (which
    # freezes the rounds: no newer version replaces the one watched).
    verdicts = [(s, s >= due, "pole_upper" if s >= due else "") for s, _ in states]
    rolled = retrain(states, cmds, load_model(MODEL, 6, 2), nominal, settings, verdicts)
    back = [r for r in rolled.rounds if r.outcome == "rolled back"]
    assert rolled.rollbacks == len(back) == 1
    # Due + 9 steps is covered by the first round ending at or after it.
    period = round(settings.update_period * 1e9)
    assert round(back[0].t * 1e9) == -(-(due + 9 * dt) // period) * period
    assert back[0].version == first.version - 1
    # A safety request in force at a round's end (cleared the step after): that round does not train,
    # the others do (the rounds of the plain run but that one).
    end = round(plain.rounds[2].t * 1e9)
    frozen = retrain(states, cmds, load_model(MODEL, 6, 2), nominal, settings,
                     [(end, False, "pole_upper"), (end + dt, False, "")])
    assert [r.t for r in frozen.rounds] == [r.t for r in plain.rounds if round(r.t * 1e9) != end]
