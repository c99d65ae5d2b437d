"""The receiver's state on disk is private: directories 0700, files 0600, whatever the umask.

The state directory holds the outbox, the seen nonces, the stored conf and
manifests and the media cache; the config file next to it holds the broker
password and the media token. Nobody but the receiver's own user reads them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO, cast

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and its parents) if missing; the directory itself ends up without group/other access."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(path, DIR_MODE)
    return path


def private_file(path: str | Path) -> Path:
    """Create ``path`` empty with mode 0600 if missing, or take group/other access away from it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.close(fd)
        _tighten(path, FILE_MODE)  # the umask may have cleared owner bits: set them as asked
    return path


def open_private(path: str | Path, mode: str = "wb") -> BinaryIO:
    """``open(path, mode)`` for writing, creating the file 0600 ("wb" truncates, "ab" appends)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return cast(BinaryIO, os.fdopen(fd, mode))  # "wb" or "ab": a binary file
    except BaseException:
        os.close(fd)
        raise


def _tighten(path: Path, mode: int) -> None:
    try:
        current = path.stat().st_mode & 0o777
        if current != mode:
            os.chmod(path, mode)
    except OSError as exc:  # not ours (a shared directory): say so, keep going
        logger.warning("cannot make %s private (mode %o): %s", path, mode, exc)
