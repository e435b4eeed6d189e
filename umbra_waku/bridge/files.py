"""The bridge's files: a private data directory and secret files only the owner may read."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from umbra_waku.errors import StateError
from umbra_waku.private_files import read_private_file

log = logging.getLogger("umbra_waku.bridge")

_SHARED = stat.S_IRWXG | stat.S_IRWXO


def prepare_data_dir(path: Path) -> None:
    """Create the data directory with mode 0700, or tighten an existing one we own."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & _SHARED:
            log.warning("%s had mode %04o; setting 0700", path, mode)
            path.chmod(0o700)
    except OSError as exc:
        raise StateError(f"data directory {path}: {exc.strerror or exc}") from None


def refuse_shared(path: Path, mode: int) -> None:
    """Raise if group or others may access ``path`` (it holds keys or tokens)."""
    if mode & _SHARED:
        raise StateError(
            f"{path} is accessible by others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )


def create_private_file(path: Path, content: str | None = None) -> bool:
    """Create ``path`` with mode 0600 (never wider, never overwriting) holding ``content``,
    fsynced; False if it existed already (and is private)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        refuse_shared(path, path.stat().st_mode)
        return False
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as handle:
        if content is not None:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    return True


def read_secret_file(path: Path) -> str:
    """A token from a private file; refuses one that group or others may access."""
    secret = read_private_file(path, StateError, "token file").strip()
    if len(secret) < 16:
        raise StateError(f"{path} holds no usable token (at least 16 characters)")
    return secret
