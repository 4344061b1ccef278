"""Offline re-training of the adapter from recorded transitions (core and safe-ctrl-retrain on a bag)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.bag.retrain import main, node_params
from safe_ctrl_ros.bag.types import typestore
from safe_ctrl_ros.bag.writer import BagWriter
from safe_ctrl_ros.control.lqr import LqrController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.offline import retrain
from safe_ctrl_ros.learning.settings import adapter_settings
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
PARAMS = REPO / "config" / "quadrotor_2d_flagship.yaml"
DT = 0.02


def heavy_run(steps: int = 600, seed: int = 3) -> tuple[list[tuple[int, FloatArray]], dict[int, FloatArray]]:
    """A 30% heavier 2D quadrotor hovering at z = 1 m under LQR plus thrust noise: (stamp, x), u by stamp."""
    heavy = systems.make("quadrotor_2d", mass=0.027 * 1.3)
    step = heavy.rk4_function(DT, 10)
    goal = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    lqr = LqrController(systems.make("quadrotor_2d"), [5, 0.1, 5, 0.1, 0.1, 0.1], [0.1, 0.1], DT, x_goal=goal)
    rng = np.random.default_rng(seed)
    x = goal.copy()
    states, cmds = [], {}
    for k in range(steps):
        stamp = k * round(DT * 1e9)
        states.append((stamp, x.copy()))
        u = lqr(x) * (1.0 + 0.05 * rng.standard_normal(2))
        cmds[stamp] = u
        x = np.asarray(step(x, u, np.zeros(WRENCH_SIZE))).reshape(-1)
    return states, cmds


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
