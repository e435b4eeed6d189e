"""Top-level behaviour: --version, --help, usage errors, error handling, lazy subcommands."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from umbra_waku import __version__, cli

from ._support import Runner


def test_version(run: Runner) -> None:
    result = run("--version")
    assert result.code == 0
    assert result.out == f"umbra-waku {__version__}\n"


def test_help(run: Runner) -> None:
    result = run("--help")
    assert result.code == 0
    for command in ("identity", "invite", "inspect"):
        assert command in result.out
    for command in ("identity", "identity new", "identity show", "invite", "inspect"):
        sub = run(*command.split(), "--help")
        assert sub.code == 0
        assert sub.out.startswith(f"usage: umbra-waku {command}")


def test_no_command(run: Runner) -> None:
    run().assert_one_line_error(2, contains="no command")


def test_unknown_command_and_option(run: Runner) -> None:
    run("frobnicate").assert_one_line_error(2, contains="invalid choice")
    run("--frobnicate").assert_one_line_error(2, contains="unrecognized")
    run("inspect", "--frobnicate", "00").assert_one_line_error(2, contains="unrecognized")


def test_main_uses_sys_argv_when_given_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["umbra-waku", "--version"])
    assert cli.main() == 0
    assert __version__ in capsys.readouterr().out


def test_selected_command() -> None:
    assert cli._selected_command(["--traceback", "bridge", "--port", "1"]) == "bridge"
    assert cli._selected_command(["-h"]) is None
    assert cli._selected_command(["--", "bridge"]) is None


# ---- lazy subcommands ----


def _plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    """A package ``<unique>`` with a ``cli`` module; returns the package name."""
    package = f"umbra_cli_plugin_{uuid.uuid4().hex}"
    folder = tmp_path / package
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "cli.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


SYNC_PLUGIN = '''
    """Make noise: the fake command's long description."""
    import argparse, json, sys

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        sys.stdout.write(json.dumps({"noise": "x" * args.times}) + "\\n")
        return 0
'''


def _register(monkeypatch: pytest.MonkeyPatch, *commands: cli.LazySubcommand) -> None:
    monkeypatch.setattr(cli, "LAZY_SUBCOMMANDS", commands)


def test_lazy_subcommand_is_offered_and_runs(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _plugin(tmp_path, monkeypatch, SYNC_PLUGIN)
    _register(monkeypatch, cli.LazySubcommand("noise", "make noise", f"{package}.cli"))

    # listed in --help, but neither the module nor its package is imported for that
    listing = run("--help")
    assert "make noise" in listing.out
    assert package not in sys.modules
    assert run("inspect", "00").code == 0
    assert package not in sys.modules

    result = run("noise", "--times", "3")
    assert result.code == 0, result.err
    assert result.json() == {"noise": "xxx"}
    assert f"{package}.cli" in sys.modules

    helped = run("noise", "--help")
    assert helped.code == 0
    assert "--times" in helped.out
    assert "long description" in helped.out
    run("noise", "--times", "many").assert_one_line_error(2, contains="invalid int")


def test_missing_lazy_module_is_not_offered(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(
        monkeypatch,
        cli.LazySubcommand("ghost", "not installed", "umbra_waku.no_such_package.cli"),
        cli.LazySubcommand("ghost2", "not installed", "no_such_top_level_package_xyz.cli"),
        cli.LazySubcommand("ghost3", "not installed", "no_such_module_xyz"),
    )
    assert "ghost" not in run("--help").out
    run("ghost").assert_one_line_error(2, contains="invalid choice")


def test_default_registry_names_bridge_and_demo() -> None:
    modules = {c.name: c.module for c in cli.LAZY_SUBCOMMANDS}
    assert modules["bridge"] == "umbra_waku.bridge.cli"
    assert "demo" in modules


def test_async_lazy_subcommand(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _plugin(
        tmp_path,
        monkeypatch,
        """
        import asyncio

        def add_arguments(parser):
            pass

        async def run(args):
            await asyncio.sleep(0)
            return 3
        """,
    )
    _register(monkeypatch, cli.LazySubcommand("later", "async", f"{package}.cli"))
    assert run("later").code == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import no_such_dependency_xyz\n", "no_such_dependency_xyz"),
        ("def add_arguments(parser):\n    pass\n", "must define"),
    ],
)
def test_broken_lazy_module_is_one_line(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    package = _plugin(tmp_path, monkeypatch, body)
    _register(monkeypatch, cli.LazySubcommand("broken", "broken", f"{package}.cli"))
    assert "broken" in run("--help").out
    line = run("broken").assert_one_line_error(1, contains=message)
    assert "broken command is unavailable" in line


FAILING_PLUGIN = """
    from umbra_waku.errors import NodeUnreachable

    def add_arguments(parser):
        parser.add_argument("what")

    def run(args):
        if args.what == "library":
            raise NodeUnreachable("cannot reach http://127.0.0.1:1\\nsecond line")
        if args.what == "os":
            open("/definitely/not/here")
        if args.what == "bug":
            raise RuntimeError("a bug, with a secret-looking message")
        if args.what == "interrupt":
            raise KeyboardInterrupt
        return 0
"""


def test_errors_from_subcommands_are_one_line(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _plugin(tmp_path, monkeypatch, FAILING_PLUGIN)
    _register(monkeypatch, cli.LazySubcommand("fail", "fails", f"{package}.cli"))
    line = run("fail", "library").assert_one_line_error(1, contains="cannot reach")
    assert "second line" in line
    run("fail", "os").assert_one_line_error(1, contains="/definitely/not/here")
    bug = run("fail", "bug").assert_one_line_error(1, contains="internal error (RuntimeError)")
    assert "secret-looking" not in bug
    interrupted = run("fail", "interrupt")
    assert interrupted.code == 130
    assert "Traceback" not in interrupted.err
    with pytest.raises(RuntimeError):
        run("--traceback", "fail", "bug")
