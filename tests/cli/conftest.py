"""Fixtures for the umbra-waku command line tests: in-process and subprocess runners, key files."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from umbra_waku import cli
from umbra_waku.identity import Identity

from ._support import KeyFile, Result, Runner


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Runner:
    """main(argv) in this process; ``stdin`` (text) replaces sys.stdin."""

    def runner(*argv: str, stdin: str | None = None) -> Result:
        capsys.readouterr()
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = cli.main(list(argv))
        finally:
            sys.stdin = saved
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return runner


def _console_script() -> str | None:
    beside = Path(sys.executable).with_name("umbra-waku")
    if beside.exists():
        return str(beside)
    return shutil.which("umbra-waku")


@pytest.fixture(params=["console-script", "python-m"])
def run_process(request: pytest.FixtureRequest, tmp_path: Path) -> Runner:
    """The command as a separate process: the installed ``umbra-waku`` script or
    ``python -m umbra_waku``."""
    if request.param == "console-script":
        script = _console_script()
        if script is None:
            pytest.skip("the umbra-waku console script is not installed (pip install -e .)")
        prefix: Sequence[str] = [script]
    else:
        prefix = [sys.executable, "-m", "umbra_waku"]

    def runner(*argv: str, stdin: str | None = None) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run(
            [*prefix, *argv],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return runner


def _key(tmp_path: Path, name: str) -> KeyFile:
    identity = Identity.generate()
    path = tmp_path / f"{name}.key"
    identity.save(path)
    return KeyFile(path, identity)


@pytest.fixture
def alice(tmp_path: Path) -> KeyFile:
    return _key(tmp_path, "alice")


@pytest.fixture
def bob(tmp_path: Path) -> KeyFile:
    return _key(tmp_path, "bob")


@pytest.fixture
def carol(tmp_path: Path) -> KeyFile:
    return _key(tmp_path, "carol")
