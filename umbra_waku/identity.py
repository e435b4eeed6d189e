"""Identities: an X25519 static key pair, its client_address and inbox_address (profile §3),
and the key file that holds it.

The key file is JSON ``{"version": 1, "x25519_private": "<hex>"}``, created with mode 0600 and
refused when anyone but the owner can read or write it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from umbra_waku import crypto
from umbra_waku.errors import IdentityError, InvalidAddress
from umbra_waku.private_files import read_private_file

KEY_FILE_VERSION = 1
_HEX = frozenset("0123456789abcdef")


def inbox_address_of(client_address: str) -> str:
    """``inbox_address`` = hex BLAKE2s-256 of the ASCII client_address."""
    return hashlib.blake2s(client_address.encode()).hexdigest()


def inbox_conversation_id(inbox_address: str) -> str:
    return f"/inbox/v1/{inbox_address}"


def inbox_content_topic(inbox_address: str) -> str:
    return f"/umbra/1/inbox-{inbox_address}/proto"


def parse_client_address(text: str) -> bytes:
    """The 32-byte public key a client_address names; raises InvalidAddress otherwise."""
    address = text.strip().lower() if isinstance(text, str) else ""
    if len(address) != 64 or not set(address) <= _HEX:
        raise InvalidAddress(
            f"a client_address is 64 hex characters (an X25519 public key), got {text!r:.80}"
        )
    return bytes.fromhex(address)


@dataclass(frozen=True)
class Identity:
    """A client's static X25519 key pair. ``repr`` never shows the private key."""

    private_key: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    #: the loaded key, for agreements without re-deriving the public key each time
    keypair: crypto.KeyPair = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.private_key) != crypto.KEY_BYTES:
            raise IdentityError("an X25519 private key is 32 bytes")
        keypair = crypto.KeyPair.from_private(self.private_key)
        object.__setattr__(self, "keypair", keypair)
        object.__setattr__(self, "public_key", keypair.public)

    @classmethod
    def generate(cls) -> Identity:
        return cls(crypto.generate_private_key())

    @property
    def client_address(self) -> str:
        return self.public_key.hex()

    @property
    def inbox_address(self) -> str:
        return inbox_address_of(self.client_address)

    @property
    def inbox_conversation_id(self) -> str:
        return inbox_conversation_id(self.inbox_address)

    @property
    def inbox_content_topic(self) -> str:
        return inbox_content_topic(self.inbox_address)

    def describe(self) -> dict[str, str]:
        """The public facts, as ``umbra-waku identity show`` prints them."""
        return {
            "client_address": self.client_address,
            "inbox_address": self.inbox_address,
            "inbox_content_topic": self.inbox_content_topic,
        }

    # ---- key files ----

    def to_json(self) -> str:
        return json.dumps({"version": KEY_FILE_VERSION, "x25519_private": self.private_key.hex()})

    @classmethod
    def from_json(cls, text: str) -> Identity:
        try:
            data = json.loads(text)
            if data.get("version") != KEY_FILE_VERSION:
                raise IdentityError(f"unsupported key file version {data.get('version')!r}")
            return cls(bytes.fromhex(data["x25519_private"]))
        except IdentityError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise IdentityError(f"not an umbra-waku key file ({type(exc).__name__})") from None

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key file with mode 0600 (created so, never widened then narrowed)."""
        target = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(target, flags, 0o600)
        except FileExistsError:
            raise IdentityError(f"{target} exists; refusing to overwrite a key file") from None
        except OSError as exc:
            raise IdentityError(f"cannot create {target}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.to_json() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise IdentityError(f"cannot write {target}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key file; refuses one that group or others may read or write."""
        return cls.from_json(read_private_file(Path(path), IdentityError, "key file"))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        if Path(path).exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity
