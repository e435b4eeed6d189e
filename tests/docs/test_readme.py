"""The README's promises: its two commands exist as written, and its Python examples are valid
code that uses names the package really has."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_two_commands_come_first_and_exist() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[0].strip() == "./scripts/demo.sh"
    assert blocks[1].strip() == "./scripts/test.sh"
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert os.access(ROOT / script, os.X_OK), script
    assert (ROOT / ".ci" / "run").read_text().count("scripts/test.sh") == 1


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", README, re.S))
def test_python_examples_import_what_exists(block: str) -> None:
    tree = ast.parse(block)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = __import__(node.module, fromlist=[alias.name for alias in node.names])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def test_documented_links_exist() -> None:
    for link in re.findall(r"\]\(((?:docs|examples)/[^)]*)\)", README):
        assert (ROOT / link).exists(), link
