"""The ``umbra-waku`` command line: a tool for people who debug the wire.

::

    umbra-waku identity new FILE          create a key file (mode 0600); never overwrites
    umbra-waku identity show FILE         the public facts of a key file, as JSON
    umbra-waku invite --identity FILE --to CLIENT_ADDRESS [--text TEXT]
                                          an invitation envelope for a client's default inbox
    umbra-waku inspect [--identity FILE] [ENVELOPE]
                                          classify one envelope (hex or base64; stdin if omitted)

Every command prints exactly one JSON object (sorted keys, newline-terminated) on stdout. Errors
are one line on stderr (``umbra-waku: error: ...``), exit status 2 for command-line usage errors and
1 for every other failure; never a traceback. Nothing here prints or logs a private key.

Adding a subcommand
-------------------
Built-in commands are :class:`Subcommand` entries in ``BUILTIN_SUBCOMMANDS``. A command whose
implementation lives in its own module (``bridge``, ``demo``) is a :class:`LazySubcommand` entry
in ``LAZY_SUBCOMMANDS``: a name, a one-line summary and a module path. That module defines::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...   # options of the command
    def run(args: argparse.Namespace) -> int: ...                     # or ``async def``

The module is imported only when its command is the one being run; ``umbra-waku --help`` and the
other commands never import it. When the module does not exist (yet), the command is not offered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import importlib
import importlib.machinery
import importlib.util
import inspect as pyinspect
import json
import logging
import os
import string
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from google.protobuf.message import DecodeError

from umbra_waku import __version__
from umbra_waku._proto import umbra_envelope_pb2
from umbra_waku.errors import UmbraWakuError
from umbra_waku.frames import (
    BadlyFormed,
    Classification,
    Closed,
    Content,
    Frame,
    Invitation,
    NotForMe,
    Readable,
)
from umbra_waku.identity import Identity
from umbra_waku.session import Session
from umbra_waku.waku.message import MAX_MESSAGE_BYTES

PROG = "umbra-waku"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Most text ``inspect`` reads (hex of the largest Waku message, with room for whitespace).
MAX_INPUT_CHARS = 4 * MAX_MESSAGE_BYTES

_HEX_DIGITS = frozenset(string.hexdigits)


class CliError(Exception):
    """A failure to report as one line on stderr, with exit status 1."""


class UsageError(Exception):
    """A command-line usage error: one line on stderr, exit status 2."""


class _ParserExit(Exception):
    """argparse finished early (``--help``, ``--version``): leave main() with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that never calls sys.exit() and reports errors in one line.

    Subparsers created through ``add_subparsers`` inherit this class.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _ParserExit(status)


# ---------------------------------------------------------------------------------------------
# Subcommand registry
# ---------------------------------------------------------------------------------------------

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], Any]  # returns int, or a coroutine that returns int


@dataclass(frozen=True, slots=True)
class Subcommand:
    """A command implemented in this module."""

    name: str
    summary: str
    description: str
    add_arguments: AddArguments
    run: Run


@dataclass(frozen=True, slots=True)
class LazySubcommand:
    """A command implemented in its own module, imported only when the command runs.

    ``module`` must define ``add_arguments(parser)`` and ``run(args) -> int`` (``run`` may be an
    ``async def``; it then runs under ``asyncio.run``). Its docstring, if any, becomes the
    command's ``--help`` description unless ``add_arguments`` sets ``parser.description`` itself.
    """

    name: str
    summary: str
    module: str


# Lazy subcommands. To add one, write the module (see LazySubcommand) and add an entry here; the
# summary lives here so that ``umbra-waku --help`` can list the command without importing it.
# Discovery is cheap: _module_available() locates the module file without executing anything,
# and the module is imported only when argv selects the command (see _selected_command()).
# A missing module simply means the command is not offered (an older or partial install).
LAZY_SUBCOMMANDS: tuple[LazySubcommand, ...] = (
    LazySubcommand(
        "bridge",
        "run the HTTP bridge between applications and the Waku network",
        "umbra_waku.bridge.cli",
    ),
    LazySubcommand(
        "demo",
        "run a demonstration conversation",
        "umbra_waku.demo",
    ),
)


def _module_available(name: str) -> bool:
    """Whether module ``name`` exists, found without executing it or its own package.

    ``find_spec`` on a dotted name would import (execute) the parent package; here only the
    grandparents are imported (for ``umbra_waku.bridge.cli``: ``umbra_waku``, already loaded) and
    the last two levels are located on disk.
    """
    parent, _, leaf = name.rpartition(".")
    try:
        if not parent:
            return importlib.util.find_spec(name) is not None
        if parent in sys.modules:
            return importlib.util.find_spec(name) is not None
        parent_spec = importlib.util.find_spec(parent)
    except (ImportError, ValueError):
        return False
    if parent_spec is None or parent_spec.submodule_search_locations is None:
        return False
    locations = list(parent_spec.submodule_search_locations)
    return importlib.machinery.PathFinder.find_spec(leaf, locations) is not None


def _load_lazy(command: LazySubcommand) -> tuple[AddArguments, Run, str | None]:
    """Import a lazy command's module: its add_arguments, run and docstring."""
    try:
        module = importlib.import_module(command.module)
    except ImportError as exc:
        raise CliError(f"the {command.name} command is unavailable: {exc}") from None
    add_arguments = getattr(module, "add_arguments", None)
    run = getattr(module, "run", None)
    if not callable(add_arguments) or not callable(run):
        raise CliError(
            f"the {command.name} command is unavailable: {command.module} must define "
            "add_arguments(parser) and run(args)"
        )
    return add_arguments, run, module.__doc__


def _selected_command(argv: Sequence[str]) -> str | None:
    """The subcommand argv names: its first token that is not an option.

    Exact because top-level options (``--help``, ``--version``, ``--traceback``) take no value.
    Keep it that way when adding one, or this must learn to skip the option's value.
    """
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _load_identity(path: str) -> Identity:
    """Identity.load, with OS errors it lets through (a directory, say) named by ``path``."""
    try:
        return Identity.load(path)  # IdentityError: missing, unreadable or readable by others
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror or exc}") from None


def decode_envelope_text(text: str, encoding: str = "auto") -> bytes:
    """Bytes from hex or base64 text (standard or URL-safe alphabet, padding optional).

    Whitespace anywhere is ignored and a ``0x`` prefix means hex. With ``encoding="auto"`` text
    made only of hex digits (even length) is read as hex, anything else as base64.
    """
    compact = "".join(text.split())
    if not compact:
        raise CliError("no envelope given (the input is empty)")
    prefixed = compact[:2] in ("0x", "0X")
    if prefixed:
        if encoding == "base64":
            raise CliError("a 0x prefix marks hex, but --encoding base64 was given")
        compact, encoding = compact[2:], "hex"
    if encoding == "auto":
        is_hex = len(compact) % 2 == 0 and set(compact) <= _HEX_DIGITS
        encoding = "hex" if is_hex else "base64"
    if encoding == "hex":
        try:
            return bytes.fromhex(compact)
        except ValueError:
            raise CliError(
                f"the envelope is not valid hex ({len(compact)} characters{_sample(compact)})"
            ) from None
    standard = compact.replace("-", "+").replace("_", "/")
    standard += "=" * (-len(standard) % 4)
    try:
        return base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        raise CliError(
            f"the envelope is neither hex nor base64 ({len(compact)} characters{_sample(compact)})"
        ) from None


def _sample(text: str) -> str:
    return f", starting {text[:16]!r}" if text else ""


def _read_envelope_text(argument: str | None) -> str:
    if argument is not None and argument != "-":
        return argument
    stream = sys.stdin
    if stream is None:
        raise CliError("no ENVELOPE argument and no standard input to read it from")
    if stream.isatty():
        sys.stderr.write(f"{PROG}: reading the envelope from standard input (end with Ctrl-D)\n")
    text = stream.read(MAX_INPUT_CHARS + 1)
    if len(text) > MAX_INPUT_CHARS:
        raise CliError(f"the input is longer than {MAX_INPUT_CHARS} characters")
    return text


# ---------------------------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------------------------


def _identity_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(
        dest="identity_action", metavar="ACTION", required=True, title="actions"
    )
    new = actions.add_parser(
        "new",
        help="create a new identity key file (mode 0600); never overwrites",
        description=(
            "Generate an X25519 identity and write it to FILE, created with mode 0600. An "
            "existing FILE is never overwritten. Prints the identity's public facts as JSON "
            "(the private key is never printed)."
        ),
    )
    new.add_argument("file", metavar="FILE", help="path of the key file to create")
    new.set_defaults(identity_run=_identity_new)
    show = actions.add_parser(
        "show",
        help="print an identity's client_address, inbox_address and inbox content topic",
        description=(
            "Read the key file FILE and print the identity's public facts as JSON: "
            "client_address (what others pass to 'invite --to'), inbox_address and "
            "inbox_content_topic. A key file readable or writable by group or others is refused."
        ),
    )
    show.add_argument("file", metavar="FILE", help="path of an existing key file")
    show.set_defaults(identity_run=_identity_show)


def _identity_run(args: argparse.Namespace) -> int:
    action: Callable[[argparse.Namespace], int] = args.identity_run
    return action(args)


def _identity_new(args: argparse.Namespace) -> int:
    identity = Identity.generate()
    identity.save(args.file)  # IdentityError when FILE exists or cannot be created
    _print_json({**identity.describe(), "key_file": args.file})
    return EXIT_OK


def _identity_show(args: argparse.Namespace) -> int:
    _print_json(_load_identity(args.file).describe())
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# invite
# ---------------------------------------------------------------------------------------------


def _invite_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--identity", "-i", metavar="FILE", required=True, help="key file of the inviting identity"
    )
    parser.add_argument(
        "--to",
        metavar="CLIENT_ADDRESS",
        required=True,
        help="client_address of the invited client (64 hex characters; "
        "see 'umbra-waku identity show')",
    )
    parser.add_argument(
        "--text", metavar="TEXT", help="initial message carried by the invitation (umbra.text)"
    )


def _invite_run(args: argparse.Namespace) -> int:
    identity = _load_identity(args.identity)
    content = None if args.text is None else Content.text(args.text)
    _conversation, outgoing = Session(identity).invite(args.to, content)
    _print_json(
        {
            "content_topic": outgoing.content_topic,
            "conversation_id": outgoing.conversation_id,
            "envelope": outgoing.payload.hex(),
            "size": len(outgoing.payload),
        }
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "envelope",
        metavar="ENVELOPE",
        nargs="?",
        help="the envelope (the Waku message payload) as hex or base64; '-' or omitted: "
        "read it from standard input",
    )
    parser.add_argument(
        "--identity",
        "-i",
        metavar="FILE",
        help="key file of the identity to classify the envelope as (without it, only the "
        "envelope's structure is checked)",
    )
    parser.add_argument(
        "--encoding",
        choices=("auto", "hex", "base64"),
        default="auto",
        help="how ENVELOPE is written (default: auto, which reads text made only of hex digits "
        "as hex; use base64 for base64 text that happens to look like hex)",
    )


def _envelope_facts(data: bytes) -> dict[str, Any]:
    """What the envelope's own structure says, read without any key."""
    facts: dict[str, Any] = {
        "conversation_hint": None,
        "salt": None,
        "encryption": None,
        "size": len(data),
    }
    if len(data) > MAX_MESSAGE_BYTES:
        return facts
    envelope = umbra_envelope_pb2.UmbraEnvelopeV1()
    try:
        envelope.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return facts
    facts["conversation_hint"] = envelope.conversation_hint
    facts["salt"] = envelope.salt
    if not envelope.HasField("encrypted_bytes"):
        facts["encryption"] = "missing"
        return facts
    encrypted = envelope.encrypted_bytes
    variant = encrypted.WhichOneof("encryption")
    facts["encryption"] = variant or "none"
    details: dict[str, Any] | None = None
    if variant == "ecies":
        details = {
            "ciphertext_size": len(encrypted.ecies.encrypted_bytes),
            "ephemeral_pubkey": encrypted.ecies.ephemeral_pubkey.hex(),
            "tag": encrypted.ecies.tag.hex(),
        }
    elif variant == "ratchet":
        details = {
            "ciphertext_size": len(encrypted.ratchet.ciphertext),
            "header_size": len(encrypted.ratchet.header),
        }
    elif variant == "plaintext":
        details = {"payload_size": len(encrypted.plaintext.payload)}
    elif variant == "encrypted_bytes":
        details = {"size": len(encrypted.encrypted_bytes)}
    if details is not None:
        facts["encryption_details"] = details
    return facts


def _content_json(content: Content) -> dict[str, Any]:
    out: dict[str, Any] = {
        "domain": content.domain,
        "tag": content.tag,
        "size": len(content.data),
    }
    try:
        out["text"] = content.data.decode("utf-8")
    except UnicodeDecodeError:
        out["base64"] = base64.b64encode(content.data).decode("ascii")
    if content.sent_at_ms:
        out["sent_at_ms"] = content.sent_at_ms
    return out


def _frame_json(frame: Frame) -> dict[str, Any]:
    if isinstance(frame, Invitation):
        return {
            "type": "invitation",
            "conversation_id": frame.conversation_id,
            "initiator": frame.initiator,
            "created_at_ms": frame.created_at_ms,
            "initial_content": (
                None if frame.initial_content is None else _content_json(frame.initial_content)
            ),
        }
    if isinstance(frame, Closed):
        return {"type": "closed", "reason": frame.reason}
    return {"type": "content", **_content_json(frame)}


def _classification_json(result: Classification) -> dict[str, Any]:
    out: dict[str, Any] = {"state": str(result.state)}
    if isinstance(result, Readable):
        out["conversation_id"] = result.conversation_id
        out["conversation_type"] = result.conversation_type
        out["sender"] = result.sender
        out["frame"] = _frame_json(result.frame)
    elif isinstance(result, BadlyFormed):
        out["reason"] = result.reason
        if result.conversation_id is not None:
            out["conversation_id"] = result.conversation_id
    return out


_NO_IDENTITY_NOTE = (
    "no --identity given: only the envelope's structure was checked, and no identity can read "
    "it here"
)
_PRIVATE_NOTE = (
    "a PrivateV1 (ratchet) envelope can only be read with its conversation's state, which this "
    "command does not have"
)


def _inspect_run(args: argparse.Namespace) -> int:
    identity = None if args.identity is None else _load_identity(args.identity)
    data = decode_envelope_text(_read_envelope_text(args.envelope), args.encoding)
    # Without an identity, a throwaway one classifies: the structural checks are then exactly the
    # library's, and an identity nobody sent anything to reads nothing (NotForMe).
    session = Session(identity if identity is not None else Identity.generate())
    result = session.classify(data)
    out = {**_envelope_facts(data), **_classification_json(result)}
    out["identity"] = None if identity is None else identity.client_address
    notes = []
    if identity is None:
        notes.append(_NO_IDENTITY_NOTE)
    if isinstance(result, NotForMe) and out["encryption"] == "ratchet":
        notes.append(_PRIVATE_NOTE)
    elif isinstance(result, NotForMe) and identity is not None:
        notes.append("the hint is not one of this identity's inbox hints")
    if notes:
        out["note"] = "; ".join(notes)
    _print_json(out)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# The command table and the parser
# ---------------------------------------------------------------------------------------------

BUILTIN_SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "identity",
        "create or show an identity key file",
        "Manage identity key files. A key file holds an X25519 private key; it is created with "
        "mode 0600 and refused when group or others may read or write it.",
        _identity_arguments,
        _identity_run,
    ),
    Subcommand(
        "invite",
        "make an invitation envelope for a client's default inbox",
        textwrap.dedent(
            """\
            Start a PrivateV1 conversation with CLIENT_ADDRESS and print the invitation to
            publish: the content topic of the client's default inbox, the envelope (hex, the
            Waku message payload) and the new conversation_id, as JSON.

            The conversation's state is not saved: this command is for testing the wire, not
            for chatting."""
        ),
        _invite_arguments,
        _invite_run,
    ),
    Subcommand(
        "inspect",
        "classify one envelope: readable, badly_formed or not_for_me",
        textwrap.dedent(
            """\
            Decode one UmbraEnvelopeV1 (hex or base64, standard or URL-safe, with or without a
            0x prefix; whitespace ignored; read from standard input when ENVELOPE is omitted)
            and print one JSON object: state, conversation_hint, salt, encryption (ecies,
            ratchet, plaintext, encrypted_bytes; "none" or "missing" when absent), size, and
            for a readable envelope its conversation and frame.

            Without --identity only the structure is checked: the state is badly_formed or
            not_for_me (no identity can read it), with a note saying so. With --identity the
            envelope is classified as that identity: an invitation to its default inbox is
            readable. A PrivateV1 envelope needs its conversation's state, which this command
            does not have, so it is reported not_for_me.

            The exit status is 0 whenever the envelope was classified, badly_formed included."""
        ),
        _inspect_arguments,
        _inspect_run,
    ),
)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser. A lazy command's module is imported only if ``argv`` selects it."""
    parser = _Parser(
        prog=PROG,
        description="umbra-waku: inspect and produce Conversations-protocol envelopes over Waku.",
        epilog=textwrap.dedent(
            f"""\
            examples:
              {PROG} identity new alice.key
              {PROG} identity show bob.key
              {PROG} invite --identity alice.key --to CLIENT_ADDRESS --text hello
              {PROG} inspect --identity bob.key 0a40...
              echo ENVELOPE | {PROG} inspect

            Run '{PROG} COMMAND --help' for a command's options."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected internal error, show the Python traceback (for bug reports)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    for builtin in BUILTIN_SUBCOMMANDS:
        sub = commands.add_parser(
            builtin.name,
            help=builtin.summary,
            description=builtin.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        builtin.add_arguments(sub)
        sub.set_defaults(_run=builtin.run)

    selected = _selected_command(argv)
    for lazy in LAZY_SUBCOMMANDS:
        if not _module_available(lazy.module):
            continue  # not installed (yet): not offered
        sub = commands.add_parser(lazy.name, help=lazy.summary, description=lazy.summary)
        if lazy.name == selected:
            add_arguments, run, doc = _load_lazy(lazy)
            if doc:
                sub.description = doc
                sub.formatter_class = argparse.RawDescriptionHelpFormatter
            add_arguments(sub)
            sub.set_defaults(_run=run)
    return parser


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


class _NoTracebackFormatter(logging.Formatter):
    """Log records from the library, on stderr, without tracebacks."""

    def formatException(self, ei: Any) -> str:
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""


def _configure_logging() -> None:
    root = logging.getLogger()
    if root.handlers:  # the embedding program (or pytest) already configured logging
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_NoTracebackFormatter(f"{PROG}: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def _error(message: str, status: int) -> int:
    sys.stderr.write(f"{PROG}: error: {_one_line(message)}\n")
    sys.stderr.flush()
    return status


def _os_error_message(exc: OSError) -> str:
    if exc.strerror and isinstance(exc.filename, str | os.PathLike):
        return f"{os.fspath(exc.filename)}: {exc.strerror}"
    return exc.strerror or str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    show_traceback = "--traceback" in arguments  # until argparse has the final word
    try:
        parser = build_parser(arguments)
        args = parser.parse_args(arguments)
        show_traceback = bool(args.traceback)
        run: Run | None = getattr(args, "_run", None)
        if run is None:
            raise UsageError(f"no command given (see '{PROG} --help')")
        status = run(args)
        if pyinspect.iscoroutine(status):
            status = asyncio.run(status)
        return int(status or 0)
    except _ParserExit as exc:
        return exc.status
    except UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except (CliError, UmbraWakuError) as exc:
        return _error(str(exc), EXIT_FAILURE)
    except BrokenPipeError:
        # stdout went away (``| head``): stop quietly; keep Python from complaining at exit.
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as exc:
        return _error(_os_error_message(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if show_traceback:
            raise
        return _error(
            f"internal error ({type(exc).__name__}); rerun with --traceback to see where",
            EXIT_FAILURE,
        )


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
