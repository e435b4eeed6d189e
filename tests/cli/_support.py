"""Helpers shared by the command line tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umbra_waku.identity import Identity


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.out.endswith("\n"), "JSON output must be newline-terminated"
        return json.loads(self.out)  # exactly one JSON document, or this raises

    def assert_one_line_error(self, code: int = 1, *, contains: str = "") -> str:
        assert self.code == code, (self.code, self.out, self.err)
        assert self.out == ""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("umbra-waku: error: "), lines[0]
        assert "Traceback" not in self.err
        assert contains.lower() in lines[0].lower(), lines[0]
        return lines[0]


Runner = Callable[..., Result]


@dataclass(frozen=True)
class KeyFile:
    path: Path
    identity: Identity

    @property
    def address(self) -> str:
        return self.identity.client_address

    @property
    def secret_hex(self) -> str:
        return self.identity.private_key.hex()


def assert_no_secrets(result: Result, *keys: KeyFile) -> None:
    for key in keys:
        assert key.secret_hex not in result.out
        assert key.secret_hex not in result.err
