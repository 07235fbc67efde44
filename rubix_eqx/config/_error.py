"""The error of a bad configuration value."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names its key path."""
