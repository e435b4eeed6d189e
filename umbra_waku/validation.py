"""Checks of option values, shared by every options class (``UmbraClient``'s ``ClientOptions``,
the REST adapter's ``RestOptions``, a third-party transport's): one rule, one wording, and a
:class:`~umbra_waku.errors.ConfigError` that names the option."""

from __future__ import annotations

import math
from typing import cast, get_args

from umbra_waku.errors import ConfigError

__all__ = ["check_choice", "check_int", "check_seconds"]


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]`` (no upper bound when None)."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(name, f"{value!r} must be an integer {bounds}")
    return value


def check_seconds(name: str, value: object, *, positive: bool) -> float:
    """``value`` if it is a finite number of seconds, > 0 when ``positive``, else >= 0."""
    bound = "> 0" if positive else ">= 0"
    if (
        isinstance(value, bool)
        or not isinstance(value, float | int)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise ConfigError(name, f"{value!r} must be a finite number of seconds {bound}")
    return value


def check_choice(name: str, value: object, choices: object) -> None:
    """``value`` is one of the strings of the ``Literal`` type ``choices``."""
    allowed = cast("tuple[str, ...]", get_args(choices))
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {list(allowed)}")
