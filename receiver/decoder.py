"""Decoding media to PCM: the only module of the receiver that runs ffmpeg.

``Decoder(path, offset_ms)`` starts ``ffmpeg -ss <offset> -i <path> -f s16le``
writing raw PCM to a pipe that :meth:`Decoder.read` drains; the binary is
``ffmpeg`` on PATH unless ``LOAXA_FFMPEG`` names another.

``StreamDecoder(url)`` does the same for a live stream (HTTP/Icecast MP3, AAC or
Ogg, HLS ``.m3u8``, RTSP/RTMP): ffmpeg's own reconnect options are set for plain
HTTP streams (:func:`stream_input_args`); restarting it when the stream stays
down is the caller's job (:mod:`receiver.relay`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

FFMPEG_ENV = "LOAXA_FFMPEG"


class DecoderError(RuntimeError):
    """ffmpeg could not be started or failed."""


def ffmpeg_binary() -> str:
    """The ffmpeg executable to run (``LOAXA_FFMPEG`` or ``ffmpeg``)."""
    return os.environ.get(FFMPEG_ENV) or "ffmpeg"


def stream_input_args(url: str) -> list[str]:
    """ffmpeg's input arguments for a live stream URL.

    ``icecast://`` is ffmpeg's name for *sending* to Icecast, so it is read as
    ``http://``. Plain HTTP(S) streams get ffmpeg's reconnect options (a dropped
    connection is retried for a few seconds inside ffmpeg; a longer outage ends
    it and the caller starts a new one; ``-reconnect_on_network_error`` is left
    out because the ffmpeg 4.3 of Raspberry Pi OS bullseye refuses it). HLS playlists (``.m3u8``) do not: the
    HLS demuxer reloads its playlist by itself, and ``-reconnect_at_eof`` would
    make it re-read the playlist forever.
    """
    if url.lower().startswith("icecast://"):
        url = "http://" + url[len("icecast://"):]
    parts = urlsplit(url)
    args: list[str] = []
    if parts.scheme.lower() in ("http", "https"):
        args += ["-user_agent", "loaxa-receiver"]
        if not parts.path.lower().endswith((".m3u8", ".m3u")):
            args += [
                "-reconnect", "1",
                "-reconnect_streamed", "1",
                "-reconnect_at_eof", "1",
                "-reconnect_delay_max", "2",
            ]
    return [*args, "-i", url]


class _Ffmpeg:
    """A running ffmpeg writing s16le PCM of its input to a pipe."""

    def _spawn(self, input_args: list[str], sample_rate: int, channels: int, label: str) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        binary = ffmpeg_binary()
        cmd = [
            binary,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            *input_args,
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
        self.pid = self._proc.pid
        logger.debug("decoder: %s (pid %d)", label, self._proc.pid)

    @property
    def bytes_per_second(self) -> int:
        """PCM bytes per second of audio."""
        return self.sample_rate * self.channels * 2

    def fileno(self) -> int:
        """The pipe ffmpeg writes PCM to (for ``select``); -1 once closed."""
        if self._proc is None or self._proc.stdout is None:
            return -1
        return self._proc.stdout.fileno()

    def read_available(self, max_bytes: int) -> bytes:
        """What the pipe holds now, up to ``max_bytes`` (one ``read`` call); empty at the end of the stream.

        Not frame-aligned: the caller keeps the remainder. Use after ``select``
        says the pipe is readable, or it blocks like :meth:`read`.
        """
        fd = self.fileno()
        if fd < 0:
            return b""
        data = os.read(fd, max_bytes)
        if not data:
            self.eof = True
        return data

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Decoder(_Ffmpeg):
    """A running ffmpeg turning one media file into s16le PCM from an offset."""

    def __init__(self, path: str | Path, offset_ms: int = 0, sample_rate: int = 44100, channels: int = 1) -> None:
        self.path = Path(path)
        self.offset_ms = max(0, int(offset_ms))
        self._spawn(
            ["-ss", f"{self.offset_ms / 1000:.3f}", "-i", str(self.path)],
            sample_rate,
            channels,
            f"{self.path.name} from {self.offset_ms} ms",
        )


class StreamDecoder(_Ffmpeg):
    """A running ffmpeg turning a live stream URL into s16le PCM (see :func:`stream_input_args`)."""

    def __init__(self, url: str, sample_rate: int = 44100, channels: int = 1) -> None:
        self.url = url
        self._spawn(stream_input_args(url), sample_rate, channels, url)
