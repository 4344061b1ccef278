"""Message types for bag files: ROS 2 Kilted's standard types plus this package's interfaces; and
opening a bag for reading with errors that name it.

Writing needs our .msg definitions (from the source tree or an installed share/safe_ctrl_ros/msg);
reading does not: MCAP bags embed every definition, and the reader registers them from the bag.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from safe_ctrl_ros.errors import ConfigError

PACKAGE = "safe_ctrl_ros"


def msg_dir() -> Path:
    """Where this package's .msg files are: the source tree, else an installed share directory."""
    source = Path(__file__).resolve().parents[2] / "msg"
    if source.is_dir():
        return source
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        share = Path(prefix) / "share" / PACKAGE / "msg"
        if share.is_dir():
            return share
    raise ConfigError("safe_ctrl_ros's .msg files were not found (source tree or AMENT_PREFIX_PATH)")


def typestore(directory: Path | None = None) -> Typestore:
    store = get_typestore(Stores.ROS2_KILTED)
    folder = directory or msg_dir()
    types = {}
    for path in sorted(folder.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


@contextmanager
def open_bag(bag: Path) -> Iterator[Any]:
    """An open rosbags AnyReader on `bag` (closed afterwards); ConfigError naming the bag if it is
    missing or cannot be read."""
    from rosbags.highlevel import AnyReader

    if not bag.exists():
        raise ConfigError(f"bag '{bag}' does not exist")
    try:
        reader = AnyReader([bag])
        reader.open()
    except Exception as exc:
        raise ConfigError(f"bag '{bag}' cannot be read: {exc}") from exc
    try:
        yield reader
    finally:
        reader.close()
