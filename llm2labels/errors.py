"""Errors a user can cause. Each carries a one-line message that says what happened and what to do."""


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; raised at start, before any work."""


class ImageError(ValueError):
    """An input file cannot be used as an image; the message is the reason recorded in the skip list."""


def require(rules: dict[str, bool], prefix: str = "") -> None:
    """Raise ConfigError with the first message (in order) whose rule does not hold, after `prefix`."""
    for message, holds in rules.items():
        if not holds:
            raise ConfigError(prefix + message)
