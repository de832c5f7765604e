"""User-facing errors: one paragraph that names the key, the value and what is allowed.

The entrypoint prints these without a traceback (set HYDRA_FULL_ERROR=1 to see one)."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix (bad config value, missing data, missing buffer)."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class BufferError_(UserError):
    """Missing, truncated or foreign expert buffer."""


def check_choice(key: str, value, allowed: Iterable) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(
            f"Config key `{key}` is {value!r}, which is not allowed; choose one of: "
            + ", ".join(repr(a) for a in allowed)
            + f". Example: `{key}={allowed[0]}` on the command line."
        )


def check_positive(key: str, value, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"Config key `{key}` is {value!r}, but it must be {kind}.")
