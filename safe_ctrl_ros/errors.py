"""Exceptions with messages that name what is wrong, shared by the core and the nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value (parameter, params file, launch file) is missing or invalid."""


class UnknownSystemError(ConfigError):
    """A system name that `safe_ctrl_ros.systems.make` does not know."""


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed contents of a YAML file; ConfigError naming `what` and the file if it cannot be read."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{what} '{file}' does not exist")
    try:
        return yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} '{file}' is not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{what} '{file}' cannot be read: {exc}") from exc
