"""Reading files that hold secrets (key files, tokens): only regular files only we may access."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from umbra_waku.errors import UmbraWakuError

SHARED_BITS = stat.S_IRWXG | stat.S_IRWXO
MAX_SECRET_FILE_BYTES = 4096


def read_private_file(path: Path, error: type[UmbraWakuError], what: str = "file") -> str:
    """The text of ``path``; raises ``error`` naming the problem when it is missing, not a
    regular file, or accessible by group or others.

    Opened without following symlinks and without blocking (a FIFO in its place must not hang
    the process), and checked with fstat before anything is read.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path} is not a regular file")
        if mode & SHARED_BITS:
            raise error(
                f"{path} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {path}"
            )
        data = os.read(fd, MAX_SECRET_FILE_BYTES)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise error(f"{path} is not text") from None
