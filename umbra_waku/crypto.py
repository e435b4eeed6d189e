"""Cryptographic building blocks, all from well-kept libraries (cryptography, hashlib, hmac).

X25519 and ChaCha20-Poly1305 come from ``cryptography``; HMAC-SHA256 and BLAKE2s from the standard
library. HKDF (RFC 5869) is written here over ``hmac.digest`` because it runs on every ratchet
step and ``cryptography``'s object-per-call HKDF costs several times more; it is checked against
the RFC's test vectors and against ``cryptography``'s HKDF in the tests.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12
ZERO_NONCE = bytes(NONCE_BYTES)

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "ZERO_NONCE",
    "CryptoFailure",
    "KeyPair",
    "aead_open",
    "aead_seal",
    "generate_private_key",
    "hkdf",
    "hmac_sha256",
    "public_key",
    "x25519",
]


class CryptoFailure(Exception):
    """Decryption or key agreement failed: the input was not made for these keys.

    Internal: classification turns it into BadlyFormed; it never reaches users.
    """


class KeyPair:
    """An X25519 key pair, loaded once for several agreements.

    Loading a private key from bytes derives its public key, a scalar multiplication as costly as
    an agreement; holding the loaded key saves one per further use. Generated keys cost none.
    """

    __slots__ = ("_key", "private", "public")

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.private = key.private_bytes_raw()
        self.public = key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        try:
            return cls(X25519PrivateKey.from_private_bytes(private))
        except ValueError as exc:
            raise CryptoFailure("not an X25519 private key") from exc

    def agree(self, public: bytes) -> bytes:
        """X25519 shared secret; refuses low-order public keys (all-zero output)."""
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError as exc:
            raise CryptoFailure("X25519 key agreement failed") from exc
        if not any(shared):
            raise CryptoFailure("X25519 produced the all-zero secret (low-order public key)")
        return shared

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"


def generate_private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    return KeyPair.from_private(private).public


def x25519(private: bytes, public: bytes) -> bytes:
    """X25519 shared secret; refuses low-order public keys (all-zero output)."""
    return KeyPair.from_private(private).agree(public)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-then-expand."""
    if length > 255 * 32:
        raise ValueError("HKDF output too long")
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ChaCha20-Poly1305: ciphertext followed by the 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, sealed, aad)
    except (InvalidTag, ValueError) as exc:
        raise CryptoFailure("authentication failed") from exc
