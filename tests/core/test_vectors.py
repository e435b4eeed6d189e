"""docs/protocol-vectors.json, recomputed two ways.

1. The library (tools/vectors.py) reproduces the file byte for byte.
2. Every value is recomputed here *independently* of umbra_waku, from the fixed inputs, with
   hashlib, hmac, cryptography's X25519 / HKDF / ChaCha20-Poly1305 and the hand-written protobuf
   reader and writer in wire.py, exactly as docs/protocol.md describes the profile. The envelopes
   are decrypted and then re-encrypted and re-encoded to the exact bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import wire

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "protocol-vectors.json"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VECTORS.read_text())
    return loaded


def test_the_library_reproduces_the_file() -> None:
    spec = importlib.util.spec_from_file_location("umbra_vectors", ROOT / "tools" / "vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.compute()) == VECTORS.read_text(), (
        "the wire format changed: if that is intended, run "
        "`python tools/vectors.py --write docs/protocol-vectors.json` and update docs/protocol.md"
    )


# ---- independent primitives ----


def pub(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def dh(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt or None, info).derive(ikm)


def kdf_rk(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = hkdf(dh_out, root_key, b"umbra-waku/private/v1/ratchet", 64)
    return out[:32], out[32:]


def kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    out = hashlib.blake2b(b"umbra-waku/private/v1/chain", key=chain_key).digest()
    return out[:32], out[32:]


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def shard(content_topic: str, n: int) -> int:
    application, version = content_topic.split("/")[1:3]
    return int.from_bytes(hashlib.sha256((application + version).encode()).digest()[24:], "big") % n


# ---- the checks ----


def test_identities_and_topics(vectors: dict[str, Any]) -> None:
    inputs = vectors["inputs"]
    for role in ("initiator", "recipient"):
        facts = vectors[role]
        private = h(inputs[f"{role}_static_private"])
        assert facts["static_private"] == private.hex()
        client_address = pub(private).hex()
        inbox_address = hashlib.blake2s(client_address.encode("ascii")).hexdigest()
        assert facts["client_address"] == client_address
        assert facts["inbox_address"] == inbox_address
        assert facts["inbox_conversation_id"] == f"/inbox/v1/{inbox_address}"
        assert facts["inbox_content_topic"] == f"/umbra/1/inbox-{inbox_address}/proto"
    # RFC 7748 section 6.1 publishes these two public keys
    assert vectors["initiator"]["client_address"] == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    assert vectors["recipient"]["client_address"] == (
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    )
    assert (
        vectors["topics"]["inbox"]["content_topic"] == vectors["recipient"]["inbox_content_topic"]
    )
    assert vectors["topics"]["private"]["content_topic"] == "/umbra/1/private/proto"
    for facts in vectors["topics"].values():
        for n, pubsub in facts["pubsub_topic"].items():
            expected = f"/waku/2/rs/{inputs['cluster_id']}/{shard(facts['content_topic'], int(n))}"
            assert pubsub == expected


def test_inbox_envelope(vectors: dict[str, Any]) -> None:
    inputs, box = vectors["inputs"], vectors["inbox_envelope"]
    recipient_private = h(inputs["recipient_static_private"])
    recipient_public = pub(recipient_private)
    cid = vectors["recipient"]["inbox_conversation_id"]
    salt = inputs["inbox_salt"]
    envelope = h(box["envelope"])

    fields = wire.fields(envelope)
    assert [(number, wire_type) for number, wire_type, *_ in fields] == [(1, 2), (2, 0), (10, 2)]
    conversation_hint, got_salt, encrypted = (value for _, _, value, _, _ in fields)
    expected_hint = hashlib.blake2s(u32(salt) + cid.encode()).hexdigest()
    assert conversation_hint == expected_hint.encode() == box["conversation_hint"].encode()
    assert got_salt == salt == box["salt"]
    assert isinstance(encrypted, bytes)
    variant = wire.fields(encrypted)
    assert [(n, t) for n, t, *_ in variant] == [(3, 2)]  # EncryptedBytes.ecies
    ecies = wire.as_dict(variant[0][2])  # type: ignore[arg-type]
    ciphertext, ephemeral, tag = ecies[1], ecies[2], ecies[3]
    assert isinstance(ciphertext, bytes)
    assert isinstance(tag, bytes)
    assert (
        ephemeral == pub(h(inputs["ecies_ephemeral_private"])) == h(box["ecies_ephemeral_public"])
    )
    assert len(tag) == 16

    # ECIES: X25519, HKDF-SHA256(salt = e_pub || recipient_pub, info), ChaCha20-Poly1305
    assert isinstance(ephemeral, bytes)
    shared = dh(recipient_private, ephemeral)
    assert shared == dh(h(inputs["ecies_ephemeral_private"]), recipient_public)
    key = hkdf(shared, ephemeral + recipient_public, b"umbra-waku/inbox/v1/ecies", 32)
    aad = expected_hint.encode() + u32(salt)
    assert shared.hex() == box["ecies_shared_secret"]
    assert key.hex() == box["ecies_key"]
    assert aad.hex() == box["aad"]
    plaintext = ChaCha20Poly1305(key).decrypt(bytes(12), ciphertext + tag, aad)
    assert plaintext.hex() == vectors["invitation"]["inbox_frame"]

    # and back: the same bytes from the independent encoder
    sealed = ChaCha20Poly1305(key).encrypt(bytes(12), plaintext, aad)
    ecies_bytes = wire.encode([(1, sealed[:-16]), (2, ephemeral), (3, sealed[-16:])])
    rebuilt = wire.encode(
        [(1, expected_hint.encode()), (2, salt), (10, wire.encode([(3, ecies_bytes)]))]
    )
    assert rebuilt == envelope

    # the Waku message that carries it: explicit ns timestamp (sint64, zigzag) and its hash
    ts = box["waku_timestamp_ns"]
    assert ts == inputs["invite_created_at_ms"] * 1_000_000
    topic = box["content_topic"]
    assert topic == vectors["recipient"]["inbox_content_topic"]
    message = wire.encode([(1, envelope), (2, topic.encode()), (10, ts << 1)])
    assert message.hex() == box["waku_message"]
    pubsub = f"/waku/2/rs/{inputs['cluster_id']}/{shard(topic, 8)}"
    assert box["waku_pubsub_topic"] == pubsub
    digest = hashlib.sha256(pubsub.encode() + envelope + topic.encode() + u64(ts)).hexdigest()
    assert box["waku_message_hash"] == "0x" + digest


def agreement(vectors: dict[str, Any]) -> dict[str, bytes]:
    inputs = vectors["inputs"]
    ik_i_priv, ik_r_priv = (
        h(inputs["initiator_static_private"]),
        h(inputs["recipient_static_private"]),
    )
    ek_priv = h(inputs["invite_ephemeral_private"])
    ik_i, ik_r, ek = pub(ik_i_priv), pub(ik_r_priv), pub(ek_priv)
    ikm = dh(ik_i_priv, ik_r) + dh(ek_priv, ik_r)
    assert ikm == dh(ik_r_priv, ik_i) + dh(ik_r_priv, ek)  # what the recipient computes
    sk = hkdf(ikm, b"", b"umbra-waku/private/v1/agreement" + ik_i + ik_r + ek, 32)
    meta = hkdf(sk, b"", b"umbra-waku/private/v1/meta", 160)
    names = ["hint_i2r", "hint_r2i", "header_i2r", "header_r2i", "confirm"]
    keys = {name: meta[32 * i : 32 * i + 32] for i, name in enumerate(names)}
    keys.update(sk=sk, ik_i=ik_i, ik_r=ik_r, ek=ek, ek_priv=ek_priv, ik_r_priv=ik_r_priv)
    return keys


def test_invitation(vectors: dict[str, Any]) -> None:
    inputs, inv = vectors["inputs"], vectors["invitation"]
    k = agreement(vectors)
    assert inv["shared_secret"] == k["sk"].hex()
    for name in ("hint_i2r", "hint_r2i", "header_i2r", "header_r2i"):
        assert inv[name.replace("_i2r", "_key_i2r").replace("_r2i", "_key_r2i")] == k[name].hex()
    assert inv["confirm_key"] == k["confirm"].hex()
    assert inv["initiator_ephemeral_public"] == k["ek"].hex()
    cid = hashlib.blake2s(b"umbra-waku/private/v1/id" + k["ik_i"] + k["ik_r"] + k["ek"]).hexdigest()
    assert inv["conversation_id"] == f"/private/v1/{cid}"

    frame = wire.fields(h(inv["inbox_frame"]))
    assert [(n, t) for n, t, *_ in frame] == [(1, 2)]  # InboxV1Frame.invite_private_v1
    invite_bytes = frame[0][2]
    assert isinstance(invite_bytes, bytes)
    invite = wire.as_dict(invite_bytes)
    assert invite[1] == k["ik_i"]
    assert invite[2] == k["ek"]
    assert invite[3] == k["ik_r"]
    assert invite[4] == inputs["invite_created_at_ms"]
    initial = invite[6]
    assert isinstance(initial, bytes)
    assert initial.hex() == inv["initial_frame"]
    content = wire.as_dict(initial)  # ContentFrame: domain, (tag 0 omitted), bytes
    assert content == {1: b"umbra.text", 3: inputs["initial_text"].encode()}
    transcript = (
        b"umbra-waku/private/v1/invite"
        + k["ik_i"]
        + k["ek"]
        + k["ik_r"]
        + u64(inputs["invite_created_at_ms"])
        + initial
    )
    confirmation = hmac.new(k["confirm"], transcript, "sha256").digest()
    assert invite[5] == confirmation
    assert inv["key_confirmation"] == confirmation.hex()
    rebuilt = wire.encode(
        [(1, k["ik_i"]), (2, k["ek"]), (3, k["ik_r"]), (4, inputs["invite_created_at_ms"]),
         (5, confirmation), (6, initial)]
    )  # fmt: skip
    assert wire.encode([(1, rebuilt)]).hex() == inv["inbox_frame"]


def test_private_messages(vectors: dict[str, Any]) -> None:
    inputs = vectors["inputs"]
    k = agreement(vectors)
    # initiator: EK is its first ratchet key, IK_r the recipient's
    root_i, chain_i2r = kdf_rk(k["sk"], dh(k["ek_priv"], k["ik_r"]))
    # recipient: the same first receiving chain, then a step with its first ratchet key R
    root_r, chain_recv = kdf_rk(k["sk"], dh(k["ik_r_priv"], k["ek"]))
    assert (root_r, chain_recv) == (root_i, chain_i2r)
    r_priv = h(inputs["recipient_ratchet_private"])
    r_pub = pub(r_priv)
    assert vectors["private"]["recipient_ratchet_public"] == r_pub.hex()
    _, chain_r2i = kdf_rk(root_r, dh(r_priv, k["ek"]))

    setups = {
        "initiator_to_recipient": (k["hint_i2r"], k["header_i2r"], k["ek"], chain_i2r),
        "recipient_to_initiator": (k["hint_r2i"], k["header_r2i"], r_pub, chain_r2i),
    }
    messages = vectors["private"]["messages"]
    assert [(m["direction"], m["counter"]) for m in messages] == [
        ("initiator_to_recipient", 0),
        ("initiator_to_recipient", 1),
        ("recipient_to_initiator", 0),
        ("recipient_to_initiator", 1),
    ]
    for m in messages:
        hint_key, header_key, ratchet_public, chain_key = setups[m["direction"]]
        counter, salt = m["counter"], m["salt"]
        conversation_hint = hashlib.blake2s(u64(counter), key=hint_key).hexdigest()
        next_chain_key, message_key = kdf_ck(chain_key)
        setups[m["direction"]] = (hint_key, header_key, ratchet_public, next_chain_key)
        nonce = bytes(4) + u64(counter)
        aad = conversation_hint.encode() + u32(salt)
        expect = {
            "hint_key": hint_key, "header_key": header_key, "ratchet_public": ratchet_public,
            "chain_key": chain_key, "next_chain_key": next_chain_key, "message_key": message_key,
            "header_nonce": nonce, "aad": aad,
        }  # fmt: skip
        for name, value in expect.items():
            assert m[name] == value.hex(), name
        assert m["conversation_hint"] == conversation_hint

        envelope = h(m["envelope"])
        top = wire.as_dict(envelope)
        assert top[1] == conversation_hint.encode()
        assert top[2] == salt
        encrypted = wire.fields(top[10])  # type: ignore[arg-type]
        assert [(n, t) for n, t, *_ in encrypted] == [(4, 2)]  # EncryptedBytes.ratchet
        ratchet = wire.as_dict(encrypted[0][2])  # type: ignore[arg-type]
        sealed_header, sealed_frame = ratchet[1], ratchet[2]
        assert isinstance(sealed_header, bytes)
        assert isinstance(sealed_frame, bytes)
        header = ChaCha20Poly1305(header_key).decrypt(nonce, sealed_header, aad)
        # RatchetHeader: ratchet key, previous_chain_length 0 (omitted), message_number
        # (= counter in a first chain; omitted when 0)
        assert wire.as_dict(header) == (
            {1: ratchet_public, 3: counter} if counter else {1: ratchet_public}
        )
        assert header.hex() == m["ratchet_header"]
        frame = ChaCha20Poly1305(message_key).decrypt(bytes(12), sealed_frame, aad + header)
        assert frame.hex() == m["frame"]
        decoded = wire.as_dict(frame)  # PrivateV1Frame: sent_at_ms, content
        assert decoded[1] == m["sent_at_ms"]
        assert wire.as_dict(decoded[10]) == {1: b"umbra.text", 3: m["text"].encode()}  # type: ignore[arg-type]

        # re-encrypt and re-encode: the exact envelope bytes
        rebuilt = wire.encode(
            [
                (1, conversation_hint.encode()),
                (2, salt),
                (10, wire.encode([(4, wire.encode([
                    (1, ChaCha20Poly1305(header_key).encrypt(nonce, header, aad)),
                    (2, ChaCha20Poly1305(message_key).encrypt(bytes(12), frame, aad + header)),
                ]))])),
            ]
        )  # fmt: skip
        assert rebuilt == envelope


# ---- docs/protocol.md stays true to the vectors ----


def test_protocol_md_snippets_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python snippets of docs/protocol.md section 10 run, in order, and their asserts hold."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 4
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/protocol.md python block {number}", "exec"), namespace)


def test_protocol_md_hex_matches_the_vectors() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    data = VECTORS.read_text()
    for block in re.findall(r"```\n([0-9a-f\n]+)```", text):
        assert block.replace("\n", "") in data
    for token in re.findall(r"[0-9a-f]{64,}", text):
        assert token in data, token
