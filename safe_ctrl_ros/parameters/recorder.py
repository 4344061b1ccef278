"""The recorder node's parameters (this module does not import CasADi: the recorder stays light)."""

from __future__ import annotations

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T


def _system_or_empty(value: str, where: str) -> str:
    if value:
        from safe_ctrl_ros import systems  # only here: it imports CasADi

        if value not in systems.SYSTEM_NAMES:
            raise ConfigError(f"{where}: unknown system '{value}'; known systems: {', '.join(systems.SYSTEM_NAMES)}")
    return value


RECORDER = NodeSpec("recorder", (
    ParamSpec("output", T.STRING, "", "bag directory to create (must not exist); required"),
    ParamSpec("topics", T.STRING_ARRAY, [""], "topics to record; [''] = every topic of the namespace, "
                                              "/clock and /diagnostics"),
    ParamSpec("exclude", T.STRING_ARRAY, [""], "topics never to record"),
    ParamSpec("discovery_period", T.DOUBLE, 0.5, "wall s between scans for new topics", low=0.0, low_open=True),
    ParamSpec("start_plant", T.BOOL, False, "call plant/start once every found topic is matched (autostart off)"),
    ParamSpec("start_after_scans", T.INT, 4, "scans without a new topic before starting the plant", low=0),
    ParamSpec("start_requires", T.STRING_ARRAY, ["controller/status"],
              "topics (relative to the namespace) that must be recorded and matched before the plant is "
              "started: a node that comes up slowly is not missed; [''] = none"),
    ParamSpec("start_system_wait", T.DOUBLE, 10.0,
              "wall s the start waits, once every topic is matched, for the plant's answer naming its system "
              "(so the bag names it from the first step); then the plant starts anyway", low=0.0),
    ParamSpec("compression", T.STRING, "zstd", "MCAP chunk compression, as rosbag2's MCAP storage offers "
                                               "(docs/RECORDING.md)",
              choices=("zstd", "lz4", "none")),
    ParamSpec("chunk_bytes", T.INT, 786432, "uncompressed bytes at which an MCAP chunk is sealed (libmcap's "
                                            "default, 768 KiB)", low=1024),
    ParamSpec("system", T.STRING, "", "the recorded system, written into the bag; '' = the plant's 'system' "
                                      "parameter", check=_system_or_empty),
))
