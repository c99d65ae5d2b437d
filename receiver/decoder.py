"""Decoding media to PCM: the only module of the receiver that runs ffmpeg.

``Decoder(path, offset_ms)`` starts ``ffmpeg -ss <offset> -i <path> -f s16le``
writing raw PCM to a pipe that :meth:`Decoder.read` drains; the binary is
``ffmpeg`` on PATH unless ``LOAXA_FFMPEG`` names another.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

FFMPEG_ENV = "LOAXA_FFMPEG"


class DecoderError(RuntimeError):
    """ffmpeg could not be started or failed."""


def ffmpeg_binary() -> str:
    """The ffmpeg executable to run (``LOAXA_FFMPEG`` or ``ffmpeg``)."""
    return os.environ.get(FFMPEG_ENV) or "ffmpeg"


class Decoder:
    """A running ffmpeg turning one media file into s16le PCM from an offset."""

    def __init__(self, path: str | Path, offset_ms: int = 0, sample_rate: int = 44100, channels: int = 1) -> None:
        self.path = Path(path)
        self.offset_ms = max(0, int(offset_ms))
        self.sample_rate = sample_rate
        self.channels = channels
        binary = ffmpeg_binary()
        cmd = [
            binary,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-ss",
            f"{self.offset_ms / 1000:.3f}",
            "-i",
            str(self.path),
            "-vn",
            "-f",
            "s16le",
            "-acodec",
            "pcm_s16le",
            "-ac",
            str(channels),
            "-ar",
            str(sample_rate),
            "-",
        ]
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr
            )
        except OSError as exc:
            self._stderr.close()
            logger.error("cannot run %s: %s; is ffmpeg installed?", binary, exc)
            raise DecoderError(f"cannot run {binary!r} ({exc.strerror or exc}): is ffmpeg installed?") from exc
        self.eof = False
        self._errors: str | None = None
        self._returncode: int | None = None
        logger.debug("decoder: %s from %d ms (pid %d)", self.path.name, self.offset_ms, self._proc.pid)

    @property
    def bytes_per_second(self) -> int:
        """PCM bytes per second of audio."""
        return self.sample_rate * self.channels * 2

    def read(self, n_bytes: int) -> bytes:
        """Up to ``n_bytes`` of PCM; fewer (possibly none) only at the end of the stream."""
        if self._proc is None or self._proc.stdout is None:
            return b""
        data = self._proc.stdout.read(n_bytes)
        if len(data) < n_bytes:
            self.eof = True
        frame = 2 * self.channels
        return data[: len(data) - len(data) % frame]

    def errors(self) -> str:
        """What ffmpeg wrote to stderr (its last lines), also after close."""
        if self._errors is not None:
            return self._errors
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " | ".join(text.strip().splitlines()[-3:])

    @property
    def returncode(self) -> int | None:
        """ffmpeg's exit status once it ended (negative when killed), else None."""
        return self._returncode if self._proc is None else self._proc.poll()

    def kill(self) -> None:
        """Stop ffmpeg at once without waiting for it (:meth:`close` still reaps it)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def close(self) -> None:
        """Stop ffmpeg and reap it; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self.eof:
            # The stream ended: let ffmpeg exit by itself so its status tells success from failure.
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
        self._returncode = proc.wait()
        self._errors = self.errors()
        self._stderr.close()

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
