"""Audio errors carry a stable code and a Vietnamese message for the UI; warnings likewise.

What an error says reaches API clients and the web UI, so it never carries a
path of this server (an upload's temporary file, the media store, a binary):
:func:`strip_paths` replaces them, and the full text goes to the debug log.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_PATH = re.compile(r"""(?<![^\s'"(\[=<])(?:file:)?/+[^\s'"<>:,;()\[\]]+""")
"""An absolute path (or a file: URL) that starts a word: ``/tmp/x/upload-1``, ``'file:///etc/passwd'``."""


def strip_paths(text: str) -> str:
    """``text`` with every absolute path and file: URL replaced by ``<path>``."""
    return _PATH.sub("<path>", text)


class AudioError(Exception):
    """An input the pipeline refuses, or a failure of ffmpeg itself."""

    def __init__(self, code: str, message: str, message_vi: str):
        clean = strip_paths(message)
        if clean != message:
            logger.debug("audio error %s (paths removed for clients): %s", code, message)
        super().__init__(clean)
        self.code = code
        self.message = clean
        self.message_vi = strip_paths(message_vi)


@dataclass(frozen=True)
class AudioWarning:
    """An input that was accepted with a reservation people should know of (a file cut short)."""

    code: str
    message: str
    message_vi: str
