"""Known-answer tests of the crypto building blocks (RFC 5869, RFC 7748) and cross-checks."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from umbra_waku import crypto
from umbra_waku.crypto import CryptoFailure

# RFC 5869 appendix A, test cases 1-3 (HKDF-SHA256)
RFC5869 = [
    (
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        bytes.fromhex("0b" * 22),
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "prk", "okm"), RFC5869)
def test_hkdf_rfc5869(
    ikm: bytes, salt: bytes, info: bytes, length: int, prk: str, okm: str
) -> None:
    assert hmac.digest(salt or bytes(32), ikm, "sha256").hex() == prk
    assert crypto.hkdf(ikm, salt=salt, info=info, length=length).hex() == okm


def _reference_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def test_hkdf_matches_cryptography_on_random_inputs() -> None:
    rng = random.Random(5869)
    for _ in range(300):
        ikm = rng.randbytes(rng.randrange(0, 100))
        salt = rng.randbytes(rng.choice([0, 1, 16, 32, 64, 65, 200]))
        info = rng.randbytes(rng.randrange(0, 100))
        length = rng.choice([1, 16, 31, 32, 33, 64, 96, 160, 255, 1000, 255 * 32])
        assert crypto.hkdf(ikm, salt=salt, info=info, length=length) == _reference_hkdf(
            ikm, salt, info, length
        )


def test_hkdf_length_limit() -> None:
    with pytest.raises(ValueError, match="too long"):
        crypto.hkdf(b"k", salt=b"", info=b"", length=255 * 32 + 1)


def test_hmac_sha256() -> None:
    # RFC 4231 test case 2
    assert crypto.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


# ---- X25519 ----

ALICE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def test_x25519_rfc7748() -> None:
    assert crypto.public_key(ALICE).hex() == ALICE_PUB
    assert crypto.public_key(BOB).hex() == BOB_PUB
    assert crypto.x25519(ALICE, bytes.fromhex(BOB_PUB)).hex() == SHARED
    assert crypto.x25519(BOB, bytes.fromhex(ALICE_PUB)).hex() == SHARED


# Points of small order on Curve25519 (and their non-canonical encodings): every one of them
# gives the all-zero shared secret, which must be refused.
LOW_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.parametrize("point", LOW_ORDER)
def test_x25519_refuses_low_order_points(point: str) -> None:
    with pytest.raises(CryptoFailure):
        crypto.x25519(crypto.generate_private_key(), bytes.fromhex(point))


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_x25519_refuses_bad_lengths(length: int) -> None:
    with pytest.raises(CryptoFailure):
        crypto.x25519(ALICE, bytes(range(length)))


def test_x25519_matches_cryptography() -> None:
    for _ in range(20):
        a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        b_pub = b.public_key().public_bytes_raw()
        assert crypto.x25519(a.private_bytes_raw(), b_pub) == a.exchange(
            X25519PublicKey.from_public_bytes(b_pub)
        )
        assert len(crypto.generate_private_key()) == 32


# ---- ChaCha20-Poly1305 ----


def test_aead_round_trip_and_layout() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    for size in (0, 1, 63, 64, 65, 1000):
        plaintext = os.urandom(size)
        sealed = crypto.aead_seal(key, nonce, plaintext, b"aad")
        assert len(sealed) == size + crypto.TAG_BYTES
        assert sealed == ChaCha20Poly1305(key).encrypt(nonce, plaintext, b"aad")
        assert crypto.aead_open(key, nonce, sealed, b"aad") == plaintext


def test_aead_tamper() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = crypto.aead_seal(key, nonce, b"attack at dawn", b"header")
    for i in range(len(sealed)):
        for mask in (0x01, 0x80):
            bad = bytearray(sealed)
            bad[i] ^= mask
            with pytest.raises(CryptoFailure):
                crypto.aead_open(key, nonce, bytes(bad), b"header")
    bad_calls: list[Callable[[], bytes]] = [
        lambda: crypto.aead_open(key, nonce, sealed, b"headeR"),
        lambda: crypto.aead_open(key, bytes(12), sealed, b"header"),
        lambda: crypto.aead_open(os.urandom(32), nonce, sealed, b"header"),
        lambda: crypto.aead_open(key, nonce, sealed[:-1], b"header"),
        lambda: crypto.aead_open(key, nonce, sealed[:15], b"header"),
        lambda: crypto.aead_open(key, nonce, b"", b"header"),
        lambda: crypto.aead_open(key, nonce, sealed + b"\x00", b"header"),
    ]
    for bad_call in bad_calls:
        with pytest.raises(CryptoFailure):
            bad_call()


def test_blake2s_hint_primitive() -> None:
    # the hint and address function is plain BLAKE2s-256 (RFC 7693), 32-byte digest
    assert hashlib.blake2s(b"abc").hexdigest() == (
        "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
    )
