"""compose.yaml, the Dockerfile and deploy/bridge.env, checked without Docker.

- compose.yaml is valid against the Compose specification's JSON schema (the copy vendored in
  check-jsonschema: nothing is fetched);
- it references files that exist, pins every image, and health-checks every long-running service;
- the bridge's environment holds only real bridge settings, and they validate;
- the network settings (cluster, shard) live in deploy/bridge.env only, the nwaku node takes them
  from there, and the real-node tests use the same values.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from umbra_waku import __version__
from umbra_waku.bot import Bot
from umbra_waku.bridge.settings import ENV_PREFIX, BridgeSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
NETWORK_ENV = REPO / "deploy" / "bridge.env"
HARNESS = REPO / "tests" / "realnodes" / "harness.py"
SERVING = ("nwaku", "bridge", "echo-bot")  # long-running services


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    found = compose()["services"][name]
    assert isinstance(found, dict)
    return found


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def service_env(name: str) -> dict[str, str]:
    """A service's environment: its env_file(s), then its environment mapping."""
    spec = service(name)
    values: dict[str, str] = {}
    env_files = spec.get("env_file", [])
    for entry in [env_files] if isinstance(env_files, str) else env_files:
        values |= read_env_file(REPO / entry)
    environment = spec.get("environment", {})
    assert isinstance(environment, dict), "use the mapping form of environment"
    values |= {key: str(value) for key, value in environment.items()}
    return values


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---- the schema ----


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_mistakes(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["bridge"]["helthcheck"] = broken["services"]["bridge"].pop("healthcheck")
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = validate(path)
    assert result.returncode != 0
    assert "helthcheck" in result.stdout + result.stderr


# ---- files, images, health checks ----


def test_referenced_files_exist() -> None:
    for name, spec in compose()["services"].items():
        build = spec.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (context / (dockerfile or "Dockerfile")).is_file(), name
        env_files = spec.get("env_file", [])
        for entry in [env_files] if isinstance(env_files, str) else env_files:
            assert (REPO / entry).is_file(), f"{name}: {entry}"
        for part in spec.get("entrypoint", []) + spec.get("command", []):
            if isinstance(part, str) and part.startswith("/app/examples/"):
                assert (REPO / part.removeprefix("/app/")).is_file(), f"{name}: {part}"


def test_images_are_pinned() -> None:
    built = {spec["image"] for spec in compose()["services"].values() if "build" in spec}
    assert built == {f"umbra-waku:{__version__}"}
    for name, spec in compose()["services"].items():
        image = spec.get("image")
        assert image, f"{name} names no image"
        _, sep, tag = image.rpartition(":")
        assert sep, f"{name}: {image} has no tag"
        assert "/" not in tag
        assert tag not in ("latest", "main", "master", "stable"), f"{name}: {image}"
        if image not in built:
            assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag}"
    assert service("nwaku")["image"].startswith("wakuorg/nwaku:v")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1)), base.group(1)


def test_long_running_services_have_health_checks() -> None:
    for name in SERVING:
        check = service(name).get("healthcheck")
        assert check is not None, name
        assert not check.get("disable", False)
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    nwaku = " ".join(service("nwaku")["healthcheck"]["test"])
    assert "http://127.0.0.1:8645/health" in nwaku
    assert "wget" in nwaku  # the nwaku image is Alpine: busybox wget, no curl
    bridge = " ".join(service("bridge")["healthcheck"]["test"])
    assert f"http://127.0.0.1:{bridge_port()}/v1/health" in bridge


def test_startup_order_waits_for_health() -> None:
    assert service("bridge")["depends_on"]["nwaku"]["condition"] == "service_healthy"
    assert service("bot-tokens")["depends_on"]["bridge"]["condition"] == "service_healthy"
    assert (
        service("echo-bot")["depends_on"]["bot-tokens"]["condition"]
        == "service_completed_successfully"
    )


def test_state_lives_in_volumes() -> None:
    declared = set(compose()["volumes"])
    mounts = {
        name: [str(v).split(":")[:2] for v in spec.get("volumes", [])]
        for name, spec in compose()["services"].items()
    }
    assert ["nwaku-data", "/data"] in mounts["nwaku"]
    assert ["bridge-data", "/data"] in mounts["bridge"]
    used = {source for entries in mounts.values() for source, _ in entries}
    assert used == declared
    db_url = next(a for a in service("nwaku")["command"] if a.startswith("--store-message-db-url"))
    assert db_url.endswith("sqlite:///data/store.sqlite3")


def test_published_ports_are_loopback_except_libp2p() -> None:
    for name, spec in compose()["services"].items():
        for port in spec.get("ports", []):
            if str(port).startswith("60000:"):
                continue  # libp2p, for peers
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


# ---- the bridge's settings ----


def bridge_port() -> int:
    listen = service_env("bridge")["UMBRA_WAKU_LISTEN"]
    return int(listen.rpartition(":")[2])


def test_bridge_environment_holds_only_valid_bridge_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = service_env("bridge")
    for key in environment:
        assert key.startswith(ENV_PREFIX), key
        assert key.removeprefix(ENV_PREFIX).lower() in BridgeSettings.model_fields, key
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.node == "http://nwaku:8645"
    assert settings.listen_address == ("0.0.0.0", bridge_port())
    assert str(settings.data_dir) == "/data"
    options = settings.transport_options()
    assert options == {"mode": "relay", "cluster_id": 42, "shard": 0}


def test_network_env_file_is_valid_settings_on_its_own() -> None:
    values = read_env_file(NETWORK_ENV)
    settings = load_settings(
        {"node": "http://127.0.0.1:8645"}
        | {key.removeprefix(ENV_PREFIX).lower(): value for key, value in values.items()}
    )
    assert settings.cluster_id is not None
    assert settings.shard is not None


def test_bridge_reaches_the_node_by_its_service_name_and_rest_port() -> None:
    node = urlsplit(service_env("bridge")["UMBRA_WAKU_NODE"])
    assert node.hostname == "nwaku"
    assert f"--rest-port={node.port}" in service("nwaku")["command"]
    assert "--rest-address=0.0.0.0" in service("nwaku")["command"]
    assert f"127.0.0.1:{bridge_port()}:{bridge_port()}" in service("bridge")["ports"]
    assert re.search(rf"^EXPOSE {bridge_port()}$", DOCKERFILE.read_text(), re.MULTILINE)


# ---- one place for the network: deploy/bridge.env ----


def nwaku_argv() -> list[str]:
    """The node's command line after its shell entrypoint expanded deploy/bridge.env."""
    spec = service("nwaku")
    entrypoint = spec["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2].replace("$$", "$")  # compose's escape for a literal $
    environment = service_env("nwaku")
    script = re.sub(r"\$\{(\w+)\}", lambda m: environment[m.group(1)], script)
    words = shlex.split(script)
    assert words[:2] == ["exec", "/usr/bin/wakunode"]
    assert words[-1] == "$@"
    return words[2:-1] + list(spec["command"])


def test_nwaku_takes_cluster_and_shard_from_the_network_env_file() -> None:
    network = read_env_file(NETWORK_ENV)
    assert service("nwaku")["env_file"] == ["deploy/bridge.env"]
    assert service("bridge")["env_file"] == ["deploy/bridge.env"]
    argv = nwaku_argv()
    assert f"--cluster-id={network['UMBRA_WAKU_CLUSTER_ID']}" in argv
    assert f"--shard={network['UMBRA_WAKU_SHARD']}" in argv
    # written nowhere else in compose.yaml
    text = COMPOSE.read_text()
    assert not re.search(r"--cluster-id=\d", text)
    assert not re.search(r"--shard=\d", text)
    assert not re.search(r"UMBRA_WAKU_(CLUSTER_ID|SHARD|MODE)\s*:", text)


def test_nwaku_runs_what_the_bridge_mode_needs() -> None:
    argv = nwaku_argv()
    for flag in ("--relay=true", "--filter=true", "--lightpush=true", "--store=true"):
        assert flag in argv
    assert "--rest=true" in argv
    assert "--rest-admin=true" in argv
    capacity = next(a for a in argv if a.startswith("--rest-relay-cache-capacity="))
    assert int(capacity.partition("=")[2]) >= 500
    assert not any(a.startswith("--rln") for a in argv)  # a private cluster without RLN
    assert "--nat=none" in argv


def harness_constants() -> dict[str, object]:
    tree = ast.parse(HARNESS.read_text())
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
                found[target.id] = node.value.value
    return found


def test_real_node_tests_use_the_same_network() -> None:
    network = read_env_file(NETWORK_ENV)
    constants = harness_constants()
    assert constants["CLUSTER_ID"] == int(network["UMBRA_WAKU_CLUSTER_ID"])
    assert constants["SHARD"] == int(network["UMBRA_WAKU_SHARD"])


# ---- the bots ----


def test_bot_services_configure_the_example_through_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    echo = service("echo-bot")
    assert echo["entrypoint"] == ["python", "/app/examples/echo_bot.py"]
    for key, value in service_env("echo-bot").items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    Bot.add_arguments(parser)
    args = parser.parse_args([])
    assert args.bridge == f"http://bridge:{bridge_port()}"
    assert args.token_file == "/tokens/echo.token"
    tokens = service("bot-tokens")
    assert tokens["entrypoint"] == ["python", "-m", "umbra_waku.bot", "provision"]
    assert f"--bridge=http://bridge:{bridge_port()}" in tokens["command"]
    assert "--token-file=/tokens/echo.token" in tokens["command"]
    assert "bot-tokens:/tokens:ro" in echo["volumes"]  # the bot reads only its own token
    assert not any("bridge-data" in str(v) for v in echo["volumes"])


# ---- the image ----


def test_dockerfile_runs_the_bridge_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["umbra-waku"]' in text
    assert 'CMD ["bridge"]' in text
    assert 'VOLUME ["/data"]' in text
    assert "HEALTHCHECK" in text
    assert "/v1/health" in text


def test_dockerignore_keeps_secrets_out_and_sources_in() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # deny by default
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "umbra_waku", "adapters", "examples"} <= allowed
    for path in allowed:
        assert (REPO / path).exists(), path
    assert "**/*.key" in lines
    assert "**/*.sqlite3" in lines
