"""Errors a user can cause. Each carries a one-line message that says what happened and what to do."""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; raised at start, before any work."""


class ImageError(ValueError):
    """An input file cannot be used as an image; the message is the reason recorded in the skip list.

    A fact about the file itself (not an image, truncated, unreadable): the sample store remembers it.
    """


class StorageError(OSError):
    """The disk refused a write (full, read-only, gone): a one-line message naming the path and what to do."""

    @classmethod
    def writing(cls, path: object, error: OSError, kept: str = "") -> StorageError:
        reason = error.strerror or str(error) or type(error).__name__
        return cls(f"cannot write {path}: {reason}{kept}")


class LimitError(ImageError):
    """The file is an image, but over a limit this run set (`dataset.max_pixels`): the store remembers it
    under that limit only, so a run with another limit decides afresh."""


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
