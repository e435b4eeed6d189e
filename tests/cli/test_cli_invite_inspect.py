"""umbra-waku invite and inspect, in process."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from umbra_waku import cli
from umbra_waku._proto import umbra_envelope_pb2
from umbra_waku.frames import Content, Readable
from umbra_waku.hints import hint
from umbra_waku.identity import Identity
from umbra_waku.session import Session
from umbra_waku.waku.message import MAX_MESSAGE_BYTES

from ._support import KeyFile, Runner, assert_no_secrets


def invite(run: Runner, sender: KeyFile, to: KeyFile, *extra: str) -> dict[str, Any]:
    result = run("invite", "--identity", str(sender.path), "--to", to.address, *extra)
    assert result.code == 0, result.err
    assert result.err == ""
    assert_no_secrets(result, sender, to)
    out: dict[str, Any] = result.json()
    return out


def inspect(run: Runner, envelope: str, *extra: str, stdin: str | None = None) -> dict[str, Any]:
    args = ["inspect", *extra] + ([] if envelope is None else [envelope])
    result = run(*args, stdin=stdin)
    assert result.code == 0, result.err
    assert result.err == ""
    out: dict[str, Any] = result.json()
    return out


# ---- invite ----


def test_invite_prints_topic_envelope_and_conversation(
    run: Runner, alice: KeyFile, bob: KeyFile
) -> None:
    out = invite(run, alice, bob, "--text", "hello")
    assert set(out) == {"content_topic", "conversation_id", "envelope", "size"}
    assert out["content_topic"] == bob.identity.inbox_content_topic
    assert out["conversation_id"].startswith("/private/v1/")
    payload = bytes.fromhex(out["envelope"])
    assert out["size"] == len(payload)
    # the envelope really is an invitation bob's session reads
    result = Session(bob.identity).classify(payload, out["content_topic"])
    assert isinstance(result, Readable)
    assert result.frame.conversation_id == out["conversation_id"]  # type: ignore[union-attr]


def test_invite_with_a_bad_address(run: Runner, alice: KeyFile) -> None:
    for bad in ("xyz", "00" * 31, "g" * 64, ""):
        run("invite", "-i", str(alice.path), "--to", bad).assert_one_line_error(
            1, contains="client_address"
        )


def test_invite_oneself(run: Runner, alice: KeyFile) -> None:
    run("invite", "-i", str(alice.path), "--to", alice.address).assert_one_line_error(
        1, contains="oneself"
    )


def test_invite_needs_identity_and_to(run: Runner, alice: KeyFile, bob: KeyFile) -> None:
    run("invite", "--to", bob.address).assert_one_line_error(2, contains="--identity")
    run("invite", "-i", str(alice.path)).assert_one_line_error(2, contains="--to")


def test_invite_with_a_missing_key_file(run: Runner, bob: KeyFile, tmp_path: Any) -> None:
    run("invite", "-i", str(tmp_path / "gone.key"), "--to", bob.address).assert_one_line_error(
        1, contains="no such key file"
    )


def test_invite_refuses_a_world_readable_key_file(
    run: Runner, alice: KeyFile, bob: KeyFile
) -> None:
    alice.path.chmod(0o604)
    run("invite", "-i", str(alice.path), "--to", bob.address).assert_one_line_error(
        1, contains="chmod 600"
    )


# ---- inspect: invitations ----


def test_invite_then_inspect_as_the_recipient_is_readable(
    run: Runner, alice: KeyFile, bob: KeyFile
) -> None:
    sent = invite(run, alice, bob, "--text", "héllo, bob")
    out = inspect(run, sent["envelope"], "--identity", str(bob.path))
    assert out["state"] == "readable"
    assert out["conversation_type"] == "inbox/v1"
    assert out["conversation_id"] == bob.identity.inbox_conversation_id
    assert out["identity"] == bob.address
    assert out["encryption"] == "ecies"
    assert len(out["encryption_details"]["ephemeral_pubkey"]) == 64
    assert out["size"] == len(bytes.fromhex(sent["envelope"]))
    envelope = umbra_envelope_pb2.UmbraEnvelopeV1.FromString(bytes.fromhex(sent["envelope"]))
    assert out["conversation_hint"] == envelope.conversation_hint
    assert out["salt"] == envelope.salt
    assert out["conversation_hint"] == hint(bob.identity.inbox_conversation_id, out["salt"])
    frame = out["frame"]
    assert frame["type"] == "invitation"
    assert frame["conversation_id"] == sent["conversation_id"]
    assert frame["initiator"] == alice.address
    assert isinstance(frame["created_at_ms"], int)
    assert frame["created_at_ms"] > 0
    initial = frame["initial_content"]
    assert initial["domain"] == "umbra.text"
    assert initial["tag"] == 0
    assert initial["text"] == "héllo, bob"
    assert "base64" not in initial


def test_invitation_without_text_has_no_initial_content(
    run: Runner, alice: KeyFile, bob: KeyFile
) -> None:
    sent = invite(run, alice, bob)
    out = inspect(run, sent["envelope"], "-i", str(bob.path))
    assert out["state"] == "readable"
    assert out["frame"]["initial_content"] is None


def test_binary_initial_content_is_shown_as_base64(
    run: Runner, alice: KeyFile, bob: KeyFile
) -> None:
    content = Content(b"\xff\x00\xfe", "example.binary", 7)
    _, outgoing = Session(alice.identity).invite(bob.address, content)
    out = inspect(run, outgoing.payload.hex(), "-i", str(bob.path))
    initial = out["frame"]["initial_content"]
    assert initial["domain"] == "example.binary"
    assert initial["tag"] == 7
    assert initial["size"] == 3
    assert base64.b64decode(initial["base64"]) == b"\xff\x00\xfe"
    assert "text" not in initial


def test_inspect_as_a_third_identity_is_not_for_me(
    run: Runner, alice: KeyFile, bob: KeyFile, carol: KeyFile
) -> None:
    sent = invite(run, alice, bob, "--text", "secret words")
    out = inspect(run, sent["envelope"], "--identity", str(carol.path))
    assert out["state"] == "not_for_me"
    assert out["identity"] == carol.address
    assert out["encryption"] == "ecies"
    assert len(out["conversation_hint"]) == 64
    assert isinstance(out["salt"], int)
    assert "frame" not in out
    assert "secret words" not in str(out)


def test_inspect_without_identity_reports_structure_only(
    run: Runner, alice: KeyFile, bob: KeyFile
) -> None:
    sent = invite(run, alice, bob, "--text", "hi")
    out = inspect(run, sent["envelope"])
    assert out["state"] == "not_for_me"
    assert out["identity"] is None
    assert "no --identity" in out["note"]
    assert out["encryption"] == "ecies"
    assert len(out["conversation_hint"]) == 64
    assert "frame" not in out


def test_private_v1_envelopes_are_not_for_me(run: Runner, alice: KeyFile, bob: KeyFile) -> None:
    alice_session, bob_session = Session(alice.identity), Session(bob.identity)
    conversation, invitation = alice_session.invite(bob.address, Content.text("hi"))
    assert isinstance(bob_session.classify(invitation.payload), Readable)
    message = alice_session.send(conversation.conversation_id, Content.text("ratcheted"))
    for key in (alice, bob):
        out = inspect(run, message.payload.hex(), "-i", str(key.path))
        assert out["state"] == "not_for_me"
        assert out["encryption"] == "ratchet"
        assert set(out["encryption_details"]) == {"ciphertext_size", "header_size"}
        assert "PrivateV1" in out["note"]
    # and the help says so
    assert "PrivateV1" in run("inspect", "--help").out


# ---- inspect: badly formed ----


def test_garbage_hex_is_badly_formed_with_exit_zero(run: Runner) -> None:
    out = inspect(run, "deadbeef00ff")
    assert out["state"] == "badly_formed"
    assert out["reason"]
    assert out["size"] == 6
    assert out["conversation_hint"] is None
    assert out["salt"] is None
    assert out["encryption"] is None


def test_garbage_hex_with_identity_is_badly_formed(run: Runner, bob: KeyFile) -> None:
    out = inspect(run, "ffffffff", "-i", str(bob.path))
    assert out["state"] == "badly_formed"
    assert out["identity"] == bob.address


def _envelope(hint_text: str, salt: int, variant: str | None) -> str:
    envelope = umbra_envelope_pb2.UmbraEnvelopeV1(conversation_hint=hint_text, salt=salt)
    if variant == "plaintext":
        envelope.encrypted_bytes.plaintext.payload = b"clear"
    elif variant == "encrypted_bytes":
        envelope.encrypted_bytes.encrypted_bytes = b"opaque"
    elif variant == "empty":
        envelope.encrypted_bytes.SetInParent()
    return envelope.SerializeToString().hex()


def test_short_hint_is_badly_formed_but_reported(run: Runner) -> None:
    out = inspect(run, _envelope("abc", 42, "plaintext"))
    assert out["state"] == "badly_formed"
    assert out["conversation_hint"] == "abc"
    assert out["salt"] == 42
    assert out["encryption"] == "plaintext"
    assert out["encryption_details"] == {"payload_size": 5}


def test_missing_encrypted_bytes(run: Runner) -> None:
    out = inspect(run, _envelope("a" * 64, 1, None))
    assert out["state"] == "badly_formed"
    assert out["encryption"] == "missing"
    assert "encrypted_bytes" in out["reason"]


@pytest.mark.parametrize(
    ("variant", "reported"),
    [("plaintext", "plaintext"), ("encrypted_bytes", "encrypted_bytes"), ("empty", "none")],
)
def test_encryption_variants(run: Runner, variant: str, reported: str) -> None:
    out = inspect(run, _envelope("b" * 64, 7, variant))
    assert out["state"] == "not_for_me"
    assert out["encryption"] == reported


def test_plaintext_to_an_inbox_is_badly_formed(run: Runner, bob: KeyFile) -> None:
    salt = 99
    envelope = _envelope(hint(bob.identity.inbox_conversation_id, salt), salt, "plaintext")
    out = inspect(run, envelope, "-i", str(bob.path))
    assert out["state"] == "badly_formed"
    assert out["conversation_id"] == bob.identity.inbox_conversation_id
    assert "ECIES" in out["reason"]


def test_tampered_invitation_is_badly_formed(run: Runner, alice: KeyFile, bob: KeyFile) -> None:
    payload = bytearray(bytes.fromhex(invite(run, alice, bob, "--text", "x")["envelope"]))
    payload[-20] ^= 1  # inside the ECIES ciphertext or tag
    out = inspect(run, payload.hex(), "-i", str(bob.path))
    assert out["state"] == "badly_formed"


def test_oversized_envelope_is_badly_formed(run: Runner) -> None:
    out = inspect(run, "00" * (MAX_MESSAGE_BYTES + 1))
    assert out["state"] == "badly_formed"
    assert out["size"] == MAX_MESSAGE_BYTES + 1


# ---- inspect: input forms ----


@pytest.fixture
def sent(run: Runner, alice: KeyFile, bob: KeyFile) -> bytes:
    return bytes.fromhex(invite(run, alice, bob, "--text", "forms")["envelope"])


def _forms(data: bytes) -> dict[str, str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return {
        "hex": data.hex(),
        "HEX": data.hex().upper(),
        "0x-hex": "0x" + data.hex(),
        "0X-hex-wrapped": "0X"
        + "\n".join(data.hex()[i : i + 60] for i in range(0, 600, 60))
        + data.hex()[600:],
        "hex-spaced": " ".join(data.hex()[i : i + 2] for i in range(0, len(data.hex()), 2)),
        "base64": std,
        "base64-unpadded": std.rstrip("="),
        "base64url": url,
        "base64url-unpadded": url.rstrip("="),
        "base64-wrapped": "\n".join(std[i : i + 76] for i in range(0, len(std), 76)) + "\n",
    }


@pytest.mark.parametrize(
    "form",
    [
        "hex",
        "HEX",
        "0x-hex",
        "0X-hex-wrapped",
        "hex-spaced",
        "base64",
        "base64-unpadded",
        "base64url",
        "base64url-unpadded",
        "base64-wrapped",
    ],
)
def test_every_input_form_gives_the_same_answer(
    run: Runner, bob: KeyFile, sent: bytes, form: str
) -> None:
    text = _forms(sent)[form]
    as_argument = inspect(run, text, "-i", str(bob.path))
    assert as_argument["state"] == "readable", form
    assert as_argument["size"] == len(sent)
    # stdin, with the envelope omitted and with "-"
    from_stdin = inspect(run, None, "-i", str(bob.path), stdin=text + "\n")  # type: ignore[arg-type]
    dash = inspect(run, "-", "-i", str(bob.path), stdin=text)
    # a fresh session each time: the same invitation is readable again
    for out in (from_stdin, dash):
        assert out["state"] == "readable"
        assert out["frame"]["conversation_id"] == as_argument["frame"]["conversation_id"]


def test_decode_prefers_hex_and_can_be_told_base64() -> None:
    assert cli.decode_envelope_text("deadbeef") == bytes.fromhex("deadbeef")
    assert cli.decode_envelope_text("deadbeef", "base64") == base64.b64decode("deadbeef")
    assert cli.decode_envelope_text("  de ad\tbe\nef \n") == bytes.fromhex("deadbeef")
    assert cli.decode_envelope_text("3q2-7w") == bytes.fromhex("deadbeef")  # url-safe, unpadded
    assert cli.decode_envelope_text("3q2+7w==") == bytes.fromhex("deadbeef")


def test_encoding_base64_option(run: Runner) -> None:
    out = inspect(run, "deadbeef", "--encoding", "base64")
    assert out["size"] == 6
    hex_out = inspect(run, "deadbeef", "--encoding", "hex")
    assert hex_out["size"] == 4


@pytest.mark.parametrize(
    "text",
    ["not hex!", "0xzz", "0xabc", "a", "abcde", "====", "3q2+7w=x", "é"],
)
def test_invalid_text_is_a_one_line_error(run: Runner, text: str) -> None:
    run("inspect", text).assert_one_line_error(1)


def test_invalid_text_on_stdin(run: Runner) -> None:
    # (letters and spaces alone would be valid base64: whitespace is ignored)
    run("inspect", stdin="this is not an envelope!\n").assert_one_line_error(
        1, contains="neither hex nor base64"
    )


def test_forced_encodings_reject_the_other(run: Runner) -> None:
    run("inspect", "--encoding", "hex", "3q2+7w==").assert_one_line_error(1, contains="hex")
    run("inspect", "--encoding", "base64", "0xdead").assert_one_line_error(1, contains="0x")


def test_empty_input(run: Runner) -> None:
    run("inspect", "").assert_one_line_error(1, contains="empty")
    run("inspect", stdin=" \n\t").assert_one_line_error(1, contains="empty")


def test_too_long_input(run: Runner) -> None:
    run("inspect", stdin="0" * (cli.MAX_INPUT_CHARS + 2)).assert_one_line_error(
        1, contains="longer"
    )


def test_inspect_with_a_missing_key_file(run: Runner, tmp_path: Any) -> None:
    run("inspect", "-i", str(tmp_path / "nope.key"), "00").assert_one_line_error(
        1, contains="no such key file"
    )


def test_inspect_refuses_a_group_readable_key_file(run: Runner, bob: KeyFile) -> None:
    bob.path.chmod(0o640)
    run("inspect", "-i", str(bob.path), "00").assert_one_line_error(1, contains="chmod 600")


def test_nothing_prints_a_private_key(run: Runner, alice: KeyFile, bob: KeyFile) -> None:
    sent = invite(run, alice, bob, "--text", "k")
    for args in (
        ("identity", "show", str(alice.path)),
        ("inspect", "-i", str(bob.path), sent["envelope"]),
        ("inspect", "-i", str(alice.path), sent["envelope"]),
    ):
        assert_no_secrets(run(*args), alice, bob)


def test_json_output_is_stable(run: Runner, alice: KeyFile) -> None:
    first = run("identity", "show", str(alice.path)).out
    assert first == run("identity", "show", str(alice.path)).out
    keys = list(run("inspect", "00").json())
    assert keys == sorted(keys)


def test_an_identity_reads_an_invitation_saved_by_load(run: Runner, tmp_path: Any) -> None:
    # key files written by the CLI are the library's key files
    path = tmp_path / "via-cli.key"
    assert run("identity", "new", str(path)).code == 0
    assert isinstance(Identity.load(path), Identity)
