"""umbra-waku identity new / show, in process."""

from __future__ import annotations

import stat
from pathlib import Path

from umbra_waku.identity import Identity

from ._support import KeyFile, Runner, assert_no_secrets


def test_identity_new_creates_a_0600_key_file(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "new.key"
    result = run("identity", "new", str(path))
    assert result.code == 0, result.err
    assert result.err == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    out = result.json()
    assert out == {**loaded.describe(), "key_file": str(path)}
    assert loaded.private_key.hex() not in result.out


def test_identity_new_refuses_to_overwrite(run: Runner, alice: KeyFile) -> None:
    before = alice.path.read_bytes()
    result = run("identity", "new", str(alice.path))
    result.assert_one_line_error(1, contains="refusing to overwrite")
    assert alice.path.read_bytes() == before


def test_identity_new_in_a_missing_directory(run: Runner, tmp_path: Path) -> None:
    result = run("identity", "new", str(tmp_path / "no" / "such" / "dir.key"))
    result.assert_one_line_error(1, contains="cannot create")


def test_identity_show_prints_the_public_facts(run: Runner, alice: KeyFile) -> None:
    result = run("identity", "show", str(alice.path))
    assert result.code == 0, result.err
    out = result.json()
    assert out == alice.identity.describe()
    assert set(out) == {"client_address", "inbox_address", "inbox_content_topic"}
    assert_no_secrets(result, alice)


def test_identity_show_refuses_a_world_readable_key_file(run: Runner, alice: KeyFile) -> None:
    alice.path.chmod(0o644)
    line = run("identity", "show", str(alice.path)).assert_one_line_error(1, contains="chmod 600")
    assert "0644" in line


def test_identity_show_missing_file(run: Runner, tmp_path: Path) -> None:
    run("identity", "show", str(tmp_path / "absent.key")).assert_one_line_error(
        1, contains="no such key file"
    )


def test_identity_show_not_a_key_file(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "junk.key"
    path.write_text("not json at all")
    path.chmod(0o600)
    run("identity", "show", str(path)).assert_one_line_error(1, contains="not an umbra-waku key")


def test_identity_show_a_directory(run: Runner, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    run("identity", "show", str(folder)).assert_one_line_error(1, contains=str(folder))


def test_identity_needs_an_action(run: Runner) -> None:
    run("identity").assert_one_line_error(2, contains="ACTION")
    run("identity", "rotate", "x").assert_one_line_error(2, contains="invalid choice")
