"""Turning errors a user can cause into one line, for every command-line entry point."""

from __future__ import annotations

from omegaconf.errors import MissingMandatoryValue

from llm2labels.errors import ConfigError, ImageError, StorageError
from llm2labels.grouping.openai_compat import GrouperError
from llm2labels.proposers.base import MissingWeightsError

_USER_ERRORS = (ConfigError, ImageError, StorageError, MissingWeightsError, GrouperError)


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error the user caused (also when wrapped by Hydra), else None."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, _USER_ERRORS):
            return str(seen).splitlines()[0] if str(seen) else type(seen).__name__
        if isinstance(seen, MissingMandatoryValue):
            key = getattr(seen, "full_key", None) or "a value"
            return f"{key} is required: pass {key}=... on the command line"
        seen = seen.__cause__ or seen.__context__
    return None
