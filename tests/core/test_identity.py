"""Identities: addresses (profile section 3) and key files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from umbra_waku.errors import IdentityError, InvalidAddress
from umbra_waku.identity import Identity, parse_client_address
from umbra_waku.waku import parse_content_topic

ALICE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


def test_addresses_per_profile() -> None:
    identity = Identity(ALICE)
    assert identity.client_address == ALICE_PUB
    inbox = hashlib.blake2s(ALICE_PUB.encode("ascii")).hexdigest()
    assert identity.inbox_address == inbox
    assert identity.inbox_conversation_id == f"/inbox/v1/{inbox}"
    assert identity.inbox_content_topic == f"/umbra/1/inbox-{inbox}/proto"
    parse_content_topic(identity.inbox_content_topic)
    assert identity.describe() == {
        "client_address": ALICE_PUB,
        "inbox_address": inbox,
        "inbox_content_topic": f"/umbra/1/inbox-{inbox}/proto",
    }


def test_random_identities() -> None:
    for _ in range(20):
        identity = Identity.generate()
        address = identity.client_address
        assert len(address) == 64
        assert address == address.lower()
        assert bytes.fromhex(address) == identity.public_key
        assert identity.inbox_address == hashlib.blake2s(address.encode()).hexdigest()
        assert parse_client_address(address) == identity.public_key


def test_repr_hides_private_key() -> None:
    identity = Identity(ALICE)
    assert ALICE.hex() not in repr(identity)
    assert ALICE.hex() not in str(identity)


def test_private_key_length() -> None:
    with pytest.raises(IdentityError):
        Identity(bytes(31))


def test_parse_client_address() -> None:
    assert parse_client_address(ALICE_PUB.upper()) == bytes.fromhex(ALICE_PUB)
    assert parse_client_address(f"  {ALICE_PUB}\n") == bytes.fromhex(ALICE_PUB)
    for bad in ["", ALICE_PUB[:-1], ALICE_PUB + "0", "g" * 64, "0x" + ALICE_PUB[2:], None, 5]:
        with pytest.raises(InvalidAddress):
            parse_client_address(bad)  # type: ignore[arg-type]


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_key_file_created_0600_and_round_trips(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "key.json"
    identity = Identity.generate()
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data == {"version": 1, "x25519_private": identity.private_key.hex()}
    loaded = Identity.load(path)
    assert loaded == identity
    assert loaded.client_address == identity.client_address


def test_save_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    first = Identity.generate()
    first.save(path)
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        Identity.generate().save(path)
    assert Identity.load(path) == first
    second = Identity.generate()
    path.chmod(0o644)
    second.save(path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path) == second


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602, 0o620, 0o610, 0o601, 0o666])
def test_load_refuses_loose_modes(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key.json"
    Identity.generate().save(path)
    path.chmod(mode)
    with pytest.raises(IdentityError, match=r"accessible by others .*chmod 600") as info:
        Identity.load(path)
    assert f"{mode:04o}" in str(info.value)
    assert not info.value.retriable


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_load_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key.json"
    identity = Identity.generate()
    identity.save(path)
    path.chmod(mode)
    assert Identity.load(path) == identity


def test_load_missing_and_symlink(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="no such key file"):
        Identity.load(tmp_path / "absent.json")
    target = tmp_path / "key.json"
    Identity.generate().save(target)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(IdentityError):
        Identity.load(link)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "null",
        "[]",
        "5",
        "{}",
        '{"version": 2, "x25519_private": "' + "00" * 32 + '"}',
        '{"version": "1", "x25519_private": "' + "00" * 32 + '"}',
        '{"version": 1}',
        '{"version": 1, "x25519_private": "zz"}',
        '{"version": 1, "x25519_private": 5}',
        '{"version": 1, "x25519_private": null}',
        '{"version": 1, "x25519_private": "' + "00" * 31 + '"}',
        '{"version": 1, "x25519_private": "' + "00" * 33 + '"}',
        '{"version": 1, "x25519_private": "' + "00" * 32 + '"',
    ],
)
def test_bad_key_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(IdentityError):
        Identity.load(path)
    with pytest.raises(IdentityError):
        Identity.from_json(text)


def test_load_or_create(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    created = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load_or_create(path) == created
