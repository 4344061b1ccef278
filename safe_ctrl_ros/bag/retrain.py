"""safe-ctrl-retrain: re-run the adapter's training on a recorded bag, without ROS.

    safe-ctrl-retrain BAG --model-file M.npz [--params-file P.yaml] [--set trainer.lr=0.002 ...]
                      [--state-topic T] [--cmd-topic T] [--out NEW.npz] [--json FILE]

Takes the transitions (state, command, next state) the adapter saw on the robot and trains on them
with the settings of the params file's adapter section (the same parameter names as the adapter
node, e.g. config/quadrotor_2d_flagship.yaml) changed by `--set`, on the recording's own clock
(safe_ctrl_ros.learning.offline: the adapter node's own round loop, with the rollback policy replayed
on the recorded constraint monitor's verdicts, `<ns>/constraint_monitor/status`, when the bag has
them; with `targets.remove_disturbance`, the default, the targets have the NMPC's disturbance
estimate removed, read from the recorded controller status `<ns>/controller/status`
(`disturbance_estimate`) as the node did; a bag without it, e.g. recorded before ControllerStatus
had the field, trains with nothing removed, and the report says so). Prints what the setting would
have learned: transitions,
accepted versions, validation loss before and after, training memory, and the recorded adapter's
own figures beside them. `--out` saves the newest accepted version as a model file to deploy.
By default the adapter's inputs are used (`<ns>/state`, `<ns>/cmd`), else the plant's.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from safe_ctrl_ros import systems
from safe_ctrl_ros.bag.types import open_bag
from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.json_out import dumps
from safe_ctrl_ros.learning.model_file import ResidualModel, load_model, save_model
from safe_ctrl_ros.learning.offline import RetrainResult, retrain
from safe_ctrl_ros.learning.settings import PARAMETERS, adapter_settings, flatten
from safe_ctrl_ros.systems.base import FloatArray


def node_params(params_file: Path, node: str) -> dict[str, Any]:
    """The flattened ros__parameters of `node` in a ROS params file (/**, /**/node, /ns/node or node)."""
    data = read_yaml(params_file, "params file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"params file '{params_file}': expected node sections at the top level")
    out: dict[str, Any] = {}
    for key, section in data.items():
        name = str(key).rstrip("/").split("/")[-1]
        if name in ("**", node):
            if not isinstance(section, dict) or not isinstance(section.get("ros__parameters", {}), dict):
                raise ConfigError(f"params file '{params_file}': '{key}.ros__parameters' must be a mapping")
            out.update(flatten(section.get("ros__parameters") or {}))
    return out


def _stamp(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def _pick(topics: dict[str, str], wanted: str | None, adapter_suffix: str, plant_suffix: str) -> str:
    if wanted:
        if wanted not in topics:
            raise ConfigError(f"topic '{wanted}' is not in the bag (it has {sorted(topics)})")
        return wanted
    for topic in sorted(topics):
        ends = topic == adapter_suffix or topic.endswith("/" + adapter_suffix)
        if ends and not topic.endswith("plant/" + adapter_suffix):
            return topic
    for topic in sorted(topics):
        if topic.endswith(plant_suffix):
            return topic
    raise ConfigError(f"the bag has no '{adapter_suffix}' or '{plant_suffix}' topic (topics: {sorted(topics)})")


@dataclass
class Recording:
    states: list[tuple[int, FloatArray]]
    commands: dict[int, FloatArray]  # by the stamp of the state they answer
    verdicts: list[tuple[int, bool, str]]  # the monitor's: stamp, any violation, safety request reason
    recorded: dict[str, Any]  # the recorded adapter's last status ({} without one)
    topics: tuple[str, str]  # the state and command topics used
    # The controller's disturbance estimates by the stamp of the state its status answers (empty
    # vector: none in use); None when the bag has no controller status with the field.
    disturbances: dict[int, FloatArray] | None = None
    status_topic: str = ""  # the controller status topic they came from ("" without)


def read_transitions(bag: Path, state_topic: str | None, cmd_topic: str | None) -> Recording:
    """States, commands by stamp, the monitor's verdicts, the recorded adapter's last status, the topics,
    the controller's disturbance estimates."""
    states: dict[int, FloatArray] = {}
    commands: dict[int, FloatArray] = {}
    verdicts: dict[int, tuple[bool, str]] = {}
    recorded: dict[str, Any] = {}
    disturbances: dict[int, FloatArray] = {}
    with open_bag(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        s_topic = _pick(topics, state_topic, "state", "plant/state")
        c_topic = _pick(topics, cmd_topic, "cmd", "plant/cmd")
        d_topic = _controller_status(topics, s_topic)
        # A bag recorded before ControllerStatus had the field holds its old definition (MCAP bags
        # embed theirs): nothing to remove.
        with_field = bool(d_topic) and any(
            getattr(reader.deserialize(raw, con.msgtype), "disturbance_estimate", None) is not None
            for con, _, raw in itertools.islice(
                reader.messages(connections=[c for c in reader.connections if c.topic == d_topic]), 1))
        for con, _, raw in reader.messages():
            monitor = con.topic.endswith("constraint_monitor/status")
            estimate = with_field and con.topic == d_topic
            if (con.topic not in (s_topic, c_topic) and not con.topic.endswith("adapter/status") and not monitor
                    and not estimate):
                continue
            msg: Any = reader.deserialize(raw, con.msgtype)
            if estimate:
                disturbances.setdefault(_stamp(msg), np.asarray(msg.disturbance_estimate, dtype=np.float64))
            elif con.topic == s_topic:
                states.setdefault(_stamp(msg), np.asarray(msg.x, dtype=np.float64))
            elif con.topic == c_topic:
                commands.setdefault(_stamp(msg), np.asarray(msg.u, dtype=np.float64))
            elif monitor:
                reason = (msg.safety_reason or "active") if msg.safety_request else ""
                verdicts.setdefault(_stamp(msg), (bool(np.any(msg.violated)), reason))
            else:
                recorded = {"method": msg.method, "updates_accepted": int(msg.updates_accepted),
                            "best_val_loss": float(msg.best_val_loss),
                            "training_memory_bytes": int(msg.training_memory_bytes)}
    return Recording(sorted(states.items()), commands, [(s, v, r) for s, (v, r) in sorted(verdicts.items())],
                     recorded, (s_topic, c_topic), disturbances if with_field else None,
                     d_topic if with_field else "")


def _controller_status(topics: dict[str, str], state_topic: str) -> str:
    """The controller status topic in the state topic's namespace, else the only one ("" if none)."""
    namespace = state_topic.rsplit("/", 1)[0] if "/" in state_topic else ""
    wanted = f"{namespace}/controller/status"
    if wanted in topics:
        return wanted
    found = sorted(t for t in topics if t == "controller/status" or t.endswith("/controller/status"))
    return found[0] if len(found) == 1 else ""


def _value(text: str) -> Any:
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-retrain", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path)
    parser.add_argument("--model-file", type=Path, required=True, help="the starting model (what the robot ran)")
    parser.add_argument("--params-file", type=Path, help="ROS params file with the adapter's section")
    parser.add_argument("--node", default="adapter", help="the node section to read (default: adapter)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help=f"change one setting ({', '.join(n for n in PARAMETERS if n != 'model_file')})")
    parser.add_argument("--state-topic")
    parser.add_argument("--cmd-topic")
    parser.add_argument("--out", type=Path, help="save the newest accepted version here (.npz)")
    parser.add_argument("--json", type=Path, help="write the result (and every round) as JSON")
    opts = parser.parse_args(argv)
    try:
        values = node_params(opts.params_file, opts.node) if opts.params_file else {}
        for item in opts.set:
            name, sep, text = item.partition("=")
            if not sep or name not in PARAMETERS:
                raise ConfigError(f"--set expects NAME=VALUE with NAME one of {sorted(PARAMETERS)}, got '{item}'")
            values[name] = _value(text)
        system = str(values.get("system", ""))
        model_overrides = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("model.")}
        start = load_model(opts.model_file)
        system = system or start.system
        nominal = systems.make(system, **model_overrides)
        start = load_model(opts.model_file, nominal.nx, nominal.nu)
        values.setdefault("dt", start.dt)
        settings = adapter_settings(values, where=f"params file '{opts.params_file}'" if opts.params_file else "")
        rec = read_transitions(opts.bag, opts.state_topic, opts.cmd_topic)
        recorded, used = rec.recorded, rec.topics
        result = retrain(rec.states, rec.commands, start, nominal, settings, rec.verdicts, rec.disturbances)
    except ConfigError as exc:
        print(f"safe-ctrl-retrain: error: {exc}", file=sys.stderr)
        return 2
    print(report(opts.bag, used, settings.config.method, result, recorded))
    print(targets_line(settings.remove_disturbance, rec))
    if opts.out:
        if result.best is None:
            print(f"no version beat the starting model: {opts.out} not written")
        else:
            meta = {**start.meta, "retrained_from": str(opts.bag), "settings": {k: str(v) for k, v in values.items()}}
            save_model(opts.out, ResidualModel(start.system, start.dt, result.best, start.loss_scale, meta))
            print(f"model: {opts.out}")
    if opts.json:
        doc = {"bag": str(opts.bag), "topics": used, "controller_status_topic": rec.status_topic,
               "settings": {k: str(v) for k, v in values.items()},
               "result": result.summary(), "recorded_adapter": recorded,
               "rounds": [r.__dict__ for r in result.rounds]}
        opts.json.write_text(dumps(doc))
    return 0


def targets_line(remove: bool, rec: Recording) -> str:
    """What the targets had removed (targets.remove_disturbance and the bag's controller status)."""
    if not remove:
        return ("targets: x_k+1 - F(x_k, u_k), the controller's disturbance estimate kept "
                "(targets.remove_disturbance false)")
    if rec.disturbances is None:
        return ("targets: nothing removed: the bag has no controller status with disturbance_estimate (recorded "
                "without the controller's status, or before ControllerStatus had the field)")
    used = sum(1 for d in rec.disturbances.values() if d.size)
    return (f"targets: the controller's disturbance estimate removed, from {rec.status_topic} "
            f"({used} of {len(rec.disturbances)} statuses carry one; empty: none in use)")


def report(bag: Path, topics: tuple[str, str], method: str, result: RetrainResult, recorded: dict[str, Any]) -> str:
    s = result.summary()
    lines = [
        f"{bag}: {s['transitions']} transitions from {topics[0]} + {topics[1]} ({s['outliers']} outliers dropped, "
        f"{s['skipped']} states without a predecessor)",
        f"{method}: {s['rounds']} rounds, {s['versions']} versions accepted, {s['rollbacks']} rolled back; "
        "validation loss "
        f"{result.start_val_loss:.4g} (start model) -> {result.best_val_loss:.4g} "
        f"({float(s['val_loss_reduction']):.1%} lower); training memory {result.memory_bytes} B; "  # type: ignore[arg-type]
        f"{result.step_time_ms:.2f} ms per step",
    ]
    if recorded:
        lines.append(
            f"recorded adapter ({recorded['method']}): {recorded['updates_accepted']} versions accepted, "
            f"best validation loss {recorded['best_val_loss']:.4g}, "
            f"training memory {recorded['training_memory_bytes']} B"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
