"""The bridge's settings: the only place that reads the environment and configuration files.

Sources, strongest first: command-line flags, environment variables ``UMBRA_WAKU_<NAME>``, the
configuration file (``--config FILE`` or ``UMBRA_WAKU_CONFIG``; TOML or JSON by extension, keys
are the setting names), the defaults. :func:`load_settings` turns every validation failure into a
:class:`~umbra_waku.errors.ConfigError` naming the one setting at fault.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from umbra_waku.errors import ConfigError

ENV_PREFIX = "UMBRA_WAKU_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
#: Settings that apply to http(s):// nodes only (passed to the REST adapter).
REST_OPTIONS = ("mode", "cluster_id", "shard", "num_shards")
#: Settings whose values are never echoed in an error message.
SECRET_SETTINGS = frozenset({"admin_token"})

_config_file: ContextVar[Path | None] = ContextVar("umbra_waku_bridge_config_file", default=None)


class BridgeSettings(BaseSettings):
    """Everything ``umbra-waku bridge`` can be told. Each field's description is its help."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,
    )

    node: str = Field(
        "memory://default",
        description="URL of the Waku node: memory://NAME (the embedded network, inside this "
        "process) or http(s)://HOST:PORT (the REST API of an nwaku or go-waku node)",
        json_schema_extra={"metavar": "URL"},
    )
    data_dir: Path = Field(
        Path("umbra-waku-data"),
        description="directory of the bridge's state: the SQLite database (identities, "
        "conversations, messages) and admin.token; created with mode 0700",
        json_schema_extra={"metavar": "DIR"},
    )
    listen: str = Field(
        "127.0.0.1:8080",
        description="HOST:PORT where the local HTTP API listens ([ADDR]:PORT for IPv6); "
        "keep it on loopback or behind a TLS proxy",
        json_schema_extra={"metavar": "HOST:PORT"},
    )
    admin_token: SecretStr | None = Field(
        None,
        description="bearer token of the admin API (creates and removes bots), at least 16 "
        "characters; default: generated on first start into DATA_DIR/admin.token (mode 0600). "
        "Prefer the environment variable to the flag, which other users can see in ps",
        json_schema_extra={"metavar": "TOKEN"},
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="logging level of the bridge (DEBUG, INFO, WARNING, ERROR)",
        json_schema_extra={"metavar": "LEVEL"},
    )
    mode: Literal["relay", "light"] | None = Field(
        None,
        description="http(s) nodes only: 'relay' publishes and receives through the node's "
        "relay (the node runs --relay); 'light' uses lightpush and filter (adapter default: "
        "relay)",
        json_schema_extra={"metavar": "MODE"},
    )
    cluster_id: int | None = Field(
        None,
        ge=0,
        le=0xFFFF,
        description="http(s) nodes only: the network's cluster id (adapter default: 0)",
        json_schema_extra={"metavar": "N"},
    )
    shard: int | None = Field(
        None,
        ge=0,
        le=0xFFFF,
        description="http(s) nodes only: use this one static shard of the cluster for every "
        "content topic (default: autosharding)",
        json_schema_extra={"metavar": "N"},
    )
    num_shards: int | None = Field(
        None,
        ge=1,
        le=0x10000,
        description="http(s) nodes only: the number of shards autosharding spreads content "
        "topics over (adapter default: 1)",
        json_schema_extra={"metavar": "N"},
    )
    max_request_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="largest accepted HTTP request body, in bytes (larger: 413)",
        json_schema_extra={"metavar": "BYTES"},
    )
    publish_wait: float = Field(
        5.0,
        ge=0,
        le=60,
        description="seconds a send request waits for the node to accept the message; after "
        "that it answers 202 and the bridge keeps retrying in the background",
        json_schema_extra={"metavar": "SECONDS"},
    )
    event_retention: int = Field(
        100_000,
        ge=1_000,
        le=10**12,
        description="events kept per bot (the newest); older ones are deleted every few "
        "seconds, so a bot whose cursor falls further behind misses the oldest",
        json_schema_extra={"metavar": "N"},
    )
    backfill_margin: float = Field(
        20.0,
        ge=0,
        le=3600,
        description="seconds of overlap when backfilling from the node's store, for clock skew "
        "and propagation delay",
        json_schema_extra={"metavar": "SECONDS"},
    )
    shutdown_timeout: float = Field(
        8.0,
        ge=0.5,
        le=60,
        description="seconds SIGTERM may take: requests and publishes in flight finish within "
        "it, then the bridge exits",
        json_schema_extra={"metavar": "SECONDS"},
    )

    @field_validator("node")
    @classmethod
    def _check_node(cls, value: str) -> str:
        parts = urlsplit(value)
        if not parts.scheme or not (parts.netloc or parts.path):
            raise ValueError("must be a URL such as memory://default or http://127.0.0.1:8645")
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("publish_wait", "backfill_margin", "shutdown_timeout")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        if path is None:
            return (init_settings, env_settings)
        if path.suffix.lower() == ".json":
            return (init_settings, env_settings, JsonConfigSettingsSource(settings_cls, path))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    # ---- derived values ----

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    @property
    def is_rest_node(self) -> bool:
        return urlsplit(self.node).scheme.lower() in ("http", "https")

    def transport_options(self) -> dict[str, object]:
        """The REST adapter options that were set (only for http(s) nodes)."""
        chosen = {name: getattr(self, name) for name in REST_OPTIONS}
        chosen = {name: value for name, value in chosen.items() if value is not None}
        if chosen and not self.is_rest_node:
            name = next(iter(chosen))
            raise ConfigError(
                describe_setting(name), f"applies only to http(s):// nodes, not {self.node}"
            )
        return chosen


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port); raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ip_address(host)
        except ValueError:
            raise ValueError("the part in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets: [::1]:8080")
    port = int(port_text)
    if port > 65535:
        raise ValueError("the port is above 65535")
    return host, port


def describe_setting(name: str) -> str:
    """``name (--flag, ENV_VAR)`` for a known setting, else ``name``."""
    if name in BridgeSettings.model_fields:
        return f"{name} ({flag_name(name)}, {env_name(name)})"
    return name


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def load_settings(
    cli_values: Mapping[str, Any] | None = None, config_file: str | Path | None = None
) -> BridgeSettings:
    """Settings from (strongest first) ``cli_values``, the environment, the configuration file
    (``config_file``, else ``$UMBRA_WAKU_CONFIG``) and the defaults.

    Raises ConfigError naming the first invalid setting.
    """
    if config_file is None:
        config_file = os.environ.get(CONFIG_ENV) or None
    path = None if config_file is None else Path(config_file)
    if path is not None:
        _check_config_file(path)
    token = _config_file.set(path)
    try:
        return BridgeSettings(**dict(cli_values or {}))
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _config_file.reset(token)


def _check_config_file(path: Path) -> None:
    """Read the file once here, so that a missing or malformed file is one clear error."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError("config", f"{path}: use a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path}: not UTF-8 text") from None
    try:
        data: object = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError("config", f"{path}: not valid {suffix[1:].upper()}: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path}: must hold a table (an object) of settings")


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    location = error.get("loc") or ("settings",)
    name = str(location[0])
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown setting (see 'umbra-waku bridge --help')"
    elif name not in SECRET_SETTINGS and "input" in error and error["type"] != "missing":
        shown = repr(error["input"])
        message += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
    return ConfigError(describe_setting(name), " ".join(message.split()))
