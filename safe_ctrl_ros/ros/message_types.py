"""Python message classes from ROS type names, as recorded in graphs and bags."""

from __future__ import annotations

import importlib


def message_class(msgtype: str) -> type:
    """The class of a type name such as 'safe_ctrl_ros/msg/State' (ValueError if malformed)."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        raise ValueError(f"'{msgtype}' is not a ROS type name like pkg/msg/Name")
    pkg, kind, name = parts
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)  # type: ignore[no-any-return]
