"""One set of option checks (umbra_waku/validation.py) behind every options class."""

from __future__ import annotations

import math

import pytest
from umbra_waku_rest.options import RestOptions

from umbra_waku.client import ClientOptions
from umbra_waku.errors import ConfigError
from umbra_waku.transport import connect
from umbra_waku.validation import check_int, check_seconds


@pytest.mark.parametrize("value", [0, -1, True, 1.0, "1", None, 11])
def test_check_int_refuses(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        check_int("n", value, 1, 10)
    assert caught.value.setting == "n"
    assert "must be an integer in [1, 10]" in str(caught.value)


def test_check_int_accepts_the_bounds_and_no_upper_bound() -> None:
    check_int("n", 1, 1, 10)
    check_int("n", 10, 1, 10)
    check_int("n", 10**12, 1)
    with pytest.raises(ConfigError, match="must be an integer >= 1"):
        check_int("n", 0, 1)


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5, True, "1", None])
def test_check_seconds_refuses(value: object) -> None:
    with pytest.raises(ConfigError, match="finite number of seconds >= 0"):
        check_seconds("t", value, positive=False)


def test_check_seconds_positive() -> None:
    check_seconds("t", 0, positive=False)
    check_seconds("t", 0.001, positive=True)
    with pytest.raises(ConfigError, match="> 0"):
        check_seconds("t", 0, positive=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("publish_backoff", math.nan),  # NaN passed the old `value < 0` check
        ("republish_interval", math.inf),
        ("health_interval", 0),
        ("queue_size", True),
        ("event_buffer", 0),
    ],
)
def test_client_options_use_the_shared_checks(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        ClientOptions(**{field: value})  # type: ignore[arg-type]
    assert caught.value.setting == field


@pytest.mark.parametrize(
    ("field", "value"), [("poll_interval", math.nan), ("retry_attempts", 0), ("mode", "x")]
)
def test_rest_options_use_the_shared_checks(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        RestOptions(**{field: value})  # type: ignore[arg-type]
    assert caught.value.setting == field


@pytest.mark.parametrize("value", [0, True, "1"])
def test_memory_transport_checks_max_message_bytes(value: object) -> None:
    with pytest.raises(ConfigError, match="max_message_bytes"):
        connect("memory://validation-test", max_message_bytes=value)
