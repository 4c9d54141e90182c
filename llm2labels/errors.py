"""Errors a user can cause. Each carries a one-line message that says what happened and what to do."""

import math


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; raised at start, before any work."""


class ImageError(ValueError):
    """An input file cannot be used as an image; the message is the reason recorded in the skip list."""


def int_at_least(value: object, low: int) -> bool:
    """A whole number (a bool is not one) of at least `low`: the rule behind every count in the configs."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def number_at_least(value: object, low: float = -math.inf) -> bool:
    """A real number (not a bool, not NaN) of at least `low`."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low


def require(rules: dict[str, bool], prefix: str = "") -> None:
    """Raise ConfigError with the first message (in order) whose rule does not hold, after `prefix`."""
    for message, holds in rules.items():
        if not holds:
            raise ConfigError(prefix + message)
