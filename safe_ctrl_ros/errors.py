"""Exceptions with messages that name what is wrong, shared by the core and the nodes."""


class ConfigError(ValueError):
    """A configuration value (parameter, params file, launch file) is missing or invalid."""


class UnknownSystemError(ConfigError):
    """A system name that `safe_ctrl_ros.systems.make` does not know."""
