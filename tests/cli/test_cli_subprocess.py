"""The installed command (``umbra-waku`` and ``python -m umbra_waku``) as a separate process."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

from umbra_waku import __version__

from ._support import Runner


def test_version_and_help(run_process: Runner) -> None:
    version = run_process("--version")
    assert version.code == 0
    assert version.out == f"umbra-waku {__version__}\n"
    helped = run_process("--help")
    assert helped.code == 0
    assert helped.out.startswith("usage: umbra-waku ")


def test_identity_invite_inspect_round_trip(run_process: Runner, tmp_path: Path) -> None:
    for name in ("alice", "bob", "carol"):
        created = run_process("identity", "new", f"{name}.key")
        assert created.code == 0, created.err
        assert stat.S_IMODE((tmp_path / f"{name}.key").stat().st_mode) == 0o600
    again = run_process("identity", "new", "alice.key")
    again.assert_one_line_error(1, contains="refusing to overwrite")

    alice = run_process("identity", "show", "alice.key").json()
    bob = run_process("identity", "show", "bob.key").json()
    assert set(bob) == {"client_address", "inbox_address", "inbox_content_topic"}

    sent = run_process(
        "invite", "--identity", "alice.key", "--to", bob["client_address"], "--text", "hello"
    ).json()
    assert sent["content_topic"] == bob["inbox_content_topic"]

    # recipient, via stdin
    readable = run_process("inspect", "--identity", "bob.key", stdin=sent["envelope"] + "\n")
    assert readable.code == 0, readable.err
    out = readable.json()
    assert out["state"] == "readable"
    assert out["frame"]["type"] == "invitation"
    assert out["frame"]["conversation_id"] == sent["conversation_id"]
    assert out["frame"]["initiator"] == alice["client_address"]
    assert out["frame"]["initial_content"]["text"] == "hello"

    # a third identity, via the argument as base64
    b64 = base64.b64encode(bytes.fromhex(sent["envelope"])).decode()
    other = run_process("inspect", "-i", "carol.key", b64).json()
    assert other["state"] == "not_for_me"


def test_world_readable_key_file_is_one_line_without_traceback(
    run_process: Runner, tmp_path: Path
) -> None:
    assert run_process("identity", "new", "k.key").code == 0
    (tmp_path / "k.key").chmod(0o644)
    run_process("identity", "show", "k.key").assert_one_line_error(1, contains="chmod 600")


def test_garbage_and_invalid_input(run_process: Runner) -> None:
    garbage = run_process("inspect", "deadbeef")
    assert garbage.code == 0
    assert garbage.json()["state"] == "badly_formed"
    run_process("inspect", "not an envelope!").assert_one_line_error(1)
    run_process("inspect", stdin="0xnothex").assert_one_line_error(1)


def test_missing_file_and_bad_address(run_process: Runner) -> None:
    run_process("identity", "show", "absent.key").assert_one_line_error(1, contains="absent.key")
    assert run_process("identity", "new", "a.key").code == 0
    run_process("invite", "-i", "a.key", "--to", "nope").assert_one_line_error(
        1, contains="client_address"
    )


def test_usage_errors_exit_2(run_process: Runner) -> None:
    run_process().assert_one_line_error(2)
    run_process("invite").assert_one_line_error(2, contains="required")
