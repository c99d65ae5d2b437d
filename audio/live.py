"""Live encoding into an Icecast mount: live voice from a browser, the station mixer, relay of a stream.

:class:`LiveEncoder` runs one ffmpeg that reads what the browser's MediaRecorder
sends (WebM/Opus, Ogg/Opus or anything else ffmpeg can demux among
:data:`audio.ffmpeg.DEMUXERS`), chunk by chunk on its stdin, and sends mono MP3
to an Icecast mount (``-content_type audio/mpeg -f mp3 icecast://...``), the
distribution format receivers already play with their relay engine, or, with
``codec="opus"``, Opus in Ogg (``-f ogg``). :meth:`LiveEncoder.from_input` does
the same from an input ffmpeg opens itself: an HTTP stream (the station's own
Icecast or another) or an ALSA capture device (``alsa:hw:1``), for the station
mixer.

Latency (``bench/live_voice.py`` measures it; figures for 48 kbps, 250 ms chunks):

- Name the input's format (``input_format``; :func:`input_format_for` maps
  MediaRecorder's ``mimeType``). Otherwise ffmpeg waits for 2 KB of input to
  recognise it, which is 1.5 s of near-silence in 32 kbps Opus before the mount
  even appears. With the format named, a WebM/Opus header holds everything the
  decoder needs, so the bounded probing (:data:`LOW_DELAY_INPUT`) and
  ``-flush_packets 1`` change nothing measurable with ffmpeg 5.1 (which already
  flushes packets to a stream); they are kept for inputs whose header says less
  and for older ffmpeg.
- From feeding a chunk to its audio in a listener's buffer: about 250 ms for MP3
  (Icecast 2.4 holds MP3 until it has a 1,400-byte block: one chunk at 48 kbps),
  under 20 ms for Ogg/Opus (Icecast forwards whole pages, 20 ms each here).
- A listener that joins an MP3 mount after its first 1,400 bytes starts mid-frame
  and ffmpeg needs 32 KiB before it recognises MP3 (see
  :mod:`controller.icecast`): 5.5 s behind live unless the receiver names the
  MP3 demuxer. An Ogg mount has no such cost: Ogg/Opus receivers are about a
  second behind live after a late join (the burst plus their 500 ms jitter
  buffer).

A browser's WebM carries its header in the first chunk only: the encoder must
see every chunk from the first one on, and a chunk that is lost (see below)
breaks the session.

A web request must never wait on ffmpeg: :meth:`LiveEncoder.feed` only queues
the chunk for a writer thread. The queue is bounded in bytes
(``max_backlog_bytes``); when ffmpeg falls that far behind (it blocks on a stalled
Icecast, the machine is overloaded) ``feed`` refuses the chunk with
``live.backlog`` instead of letting memory grow, and the caller should end the
session (a container with a hole in it cannot be repaired).

Errors are :class:`LiveError` (an :class:`~audio.errors.AudioError`: stable code,
message, Vietnamese message): ``live.encoder_gone`` when ffmpeg has ended while
chunks still come, ``live.encoder_failed`` from :meth:`LiveEncoder.close` when it
ended with an error of its own, ``live.backlog``, ``live.closed``,
``live.bad_format``, ``live.bad_codec``, ``live.bad_input``, ``live.not_fed``,
``live.no_encoder``. Their messages carry the
tail of ffmpeg's stderr with the source password masked; the password is in
ffmpeg's command line, which other users of the controller's machine can read.
"""

from __future__ import annotations

import collections
import logging
import re
import subprocess
import threading
from types import TracebackType
from typing import IO
from urllib.parse import urlsplit

from audio.errors import AudioError
from audio.ffmpeg import DEMUXERS, ffmpeg_exe

logger = logging.getLogger(__name__)

LOW_DELAY_INPUT = ("-fflags", "nobuffer", "-probesize", "32", "-analyzeduration", "0")
"""Input options: no packet buffering while probing, and probing bounded to the container's header."""
MAX_BACKLOG_BYTES = 256 * 1024
"""Default bound of chunks queued for ffmpeg: about 16 s of Opus at 128 kbps, a minute at 32 kbps."""
CLOSE_TIMEOUT_S = 5.0
"""How long :meth:`LiveEncoder.close` waits for ffmpeg to finish before killing it."""
STDERR_LINES = 20
URL_PROTOCOLS = "http,https,tcp,tls,crypto"
"""Protocols an input URL (:meth:`LiveEncoder.from_input`) may use."""
_CREDENTIALS = re.compile(r"(//[^/:@\s]*:)[^@\s]*@")
CODECS = ("mp3", "opus")
_MIME_FORMATS = {"audio/webm": "webm", "video/webm": "webm", "audio/ogg": "ogg", "application/ogg": "ogg",
                 "audio/mp4": "mp4", "video/mp4": "mp4", "audio/mpeg": "mp3", "audio/wav": "wav", "audio/x-wav": "wav"}


class LiveError(AudioError):
    """A live encoding that cannot go on; ``code`` says why (``live.*``)."""


def input_format_for(mime_type: str) -> str | None:
    """The demuxer to force for a MediaRecorder ``mimeType`` (``audio/webm;codecs=opus`` -> ``webm``), else None."""
    return _MIME_FORMATS.get(mime_type.split(";", 1)[0].strip().lower())


def mask_credentials(text: str, secret: str = "") -> str:
    """``text`` with the password of every ``scheme://user:password@`` (and ``secret`` itself) masked."""
    text = _CREDENTIALS.sub(r"\1***@", text)
    return text.replace(secret, "***") if secret else text


class LiveEncoder:
    """One ffmpeg that encodes a live input into the Icecast mount at ``source_url``.

    Built directly, it reads chunks given to :meth:`feed` (the browser's
    MediaRecorder output); ``input_format`` forces a demuxer (``webm``, ``ogg``)
    instead of ffmpeg's detection, which has to wait for 2 KB of input.
    """

    def __init__(self, source_url: str, *, input_format: str | None = None, bitrate_k: int = 48,
                 sample_rate: int = 44100, codec: str = "mp3", max_backlog_bytes: int = MAX_BACKLOG_BYTES) -> None:
        input_args = ["-protocol_whitelist", "pipe", "-format_whitelist", ",".join(DEMUXERS),
                      *LOW_DELAY_INPUT, *_forced(input_format), "-i", "pipe:0"]
        self._setup(source_url, input_args, fed=True, bitrate_k=bitrate_k, sample_rate=sample_rate, codec=codec,
                    max_backlog_bytes=max_backlog_bytes)

    @classmethod
    def from_input(cls, url_or_device: str, source_url: str, *, input_format: str | None = None,
                   bitrate_k: int = 48, sample_rate: int = 44100, codec: str = "mp3") -> LiveEncoder:
        """An encoder of an input ffmpeg opens itself: ``http(s)://`` / ``icecast://`` stream or ``alsa:<device>``.

        An HTTP stream gets ffmpeg's reconnect options; for a stream that stays
        down the encoder ends (:attr:`running` turns False) and the caller
        starts another. ``input_format`` (``mp3``) spares the wait for ffmpeg's
        recognition of a stream joined mid-frame (32 KiB of MP3).
        """
        if url_or_device.startswith("alsa:"):
            device = url_or_device[len("alsa:"):] or "default"
            input_args = ["-f", "alsa", "-i", device]
        else:
            url = url_or_device
            if url.lower().startswith("icecast://"):
                url = "http://" + url[len("icecast://"):]
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                raise LiveError("live.bad_input",
                                f"a live input is an http(s) stream or alsa:<device>, not {mask_credentials(url)!r}",
                                "Nguồn trực tiếp phải là luồng http(s) hoặc thiết bị ALSA.")
            input_args = ["-protocol_whitelist", URL_PROTOCOLS, "-reconnect", "1", "-reconnect_streamed", "1",
                          "-reconnect_delay_max", "2", *LOW_DELAY_INPUT, *_forced(input_format), "-i", url]
        encoder = cls.__new__(cls)
        encoder._setup(source_url, input_args, fed=False, bitrate_k=bitrate_k, sample_rate=sample_rate, codec=codec,
                       max_backlog_bytes=0)
        return encoder

    def _setup(self, source_url: str, input_args: list[str], *, fed: bool, bitrate_k: int, sample_rate: int,
               codec: str, max_backlog_bytes: int) -> None:
        if codec not in CODECS:
            raise LiveError("live.bad_codec", f"live codec {codec!r} is not one of {', '.join(CODECS)}",
                            "Định dạng phát trực tiếp không được hỗ trợ.")
        parts = urlsplit(source_url)
        self.mount = parts.path or "/"
        self._secret = parts.password or ""
        self._fed = fed
        self.max_backlog_bytes = max_backlog_bytes
        self._bytes_in = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._ended_by_us = False
        self._write_error = ""
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostats", *([] if fed else ["-nostdin"]),
            "-loglevel", "warning", *input_args,
            "-map", "0:a:0", "-vn", "-ac", "1", *_output_args(codec, bitrate_k, sample_rate),
            "-flush_packets", "1", "-ice_name", "loaxa live", "-ice_public", "0", source_url,
        ]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if fed else subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise LiveError("live.no_encoder", f"cannot run ffmpeg: {exc.strerror or exc}",
                            "Không chạy được bộ mã hoá âm thanh.") from exc
        self._stderr_thread = threading.Thread(target=self._read_stderr, name=f"live-stderr{self.mount}",
                                               daemon=True)
        self._stderr_thread.start()
        self._writer: threading.Thread | None = None
        if fed:
            self._writer = threading.Thread(target=self._write, name=f"live-writer{self.mount}", daemon=True)
            self._writer.start()
        logger.info("live encoder for %s started (pid %d, %s %d kbps)", self.mount, self._proc.pid, codec, bitrate_k)

    # ----------------------------------------------------------- state

    @property
    def bytes_in(self) -> int:
        """Bytes accepted by :meth:`feed` so far."""
        return self._bytes_in

    @property
    def backlog(self) -> int:
        """Bytes queued for ffmpeg and not written yet."""
        with self._cond:
            return self._queued

    @property
    def running(self) -> bool:
        """True while ffmpeg runs and :meth:`close` has not been called."""
        return not self._closing and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """ffmpeg's process id."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """ffmpeg's exit status once it ended, else None."""
        return self._proc.poll()

    def stderr_tail(self, lines: int = 3) -> str:
        """ffmpeg's last lines on stderr (password masked), joined by `` | ``."""
        with self._cond:
            kept = list(self._stderr)
        return " | ".join(kept[-lines:])

    # ----------------------------------------------------------- the caller's side

    def feed(self, chunk: bytes) -> None:
        """Queue ``chunk`` for ffmpeg; returns at once.

        Raises :class:`LiveError`: ``live.encoder_gone`` once ffmpeg has ended,
        ``live.backlog`` when the chunk would take the queue past
        ``max_backlog_bytes`` (the chunk is not taken), ``live.closed`` after
        :meth:`close`, ``live.not_fed`` for an encoder of :meth:`from_input`.
        """
        if not self._fed:
            raise LiveError("live.not_fed", "this encoder reads its own input", "Bộ mã hoá này không nhận dữ liệu.")
        if self._closing:
            raise LiveError("live.closed", "the live encoder is closed", "Phiên phát trực tiếp đã kết thúc.")
        if self._proc.poll() is not None or self._write_error:
            raise self._gone()
        if not chunk:
            return
        with self._cond:
            if self._queued + len(chunk) > self.max_backlog_bytes:
                logger.warning("live %s: encoder %d bytes behind; chunk of %d bytes refused", self.mount,
                               self._queued, len(chunk))
                raise LiveError("live.backlog",
                                f"the encoder is {self._queued} bytes behind; the live session must restart",
                                "Bộ mã hoá không theo kịp; cần bắt đầu lại phiên phát trực tiếp.")
            self._queue.append(bytes(chunk))
            self._queued += len(chunk)
            self._bytes_in += len(chunk)
            self._cond.notify_all()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """End the input, let ffmpeg encode what it holds and leave the mount; kill it after ``timeout``.

        An encoder of :meth:`from_input` is stopped with SIGTERM (its input has no end).

        Safe to call twice. Raises :class:`LiveError` ``live.encoder_failed`` (once)
        when ffmpeg ended with an error of its own (it could not reach Icecast,
        the password was refused, the input was not audio).
        """
        with self._cond:
            if self._closed:
                return
            self._closed = self._closing = True
            self._cond.notify_all()
        if self._writer is None and self._proc.poll() is None:
            self._ended_by_us = True  # an input of its own never ends: ffmpeg stops on SIGTERM, flushing what it holds
            self._proc.terminate()
        if self._writer is not None:
            self._writer.join(timeout)  # the writer drains the queue, then closes stdin
            if self._writer.is_alive():
                logger.warning("live %s: ffmpeg did not take its input within %.1f s; killing it", self.mount,
                               timeout)
                self._kill()
                self._writer.join(timeout)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("live %s: ffmpeg did not end within %.1f s; killing it", self.mount, timeout)
            self._kill()
            self._proc.wait()
        self._stderr_thread.join(timeout)
        status = self._proc.returncode
        logger.info("live encoder for %s ended (status %s, %d bytes in)", self.mount, status, self._bytes_in)
        if status != 0 and not self._ended_by_us:
            raise LiveError("live.encoder_failed", f"the live encoder failed (status {status}): "
                            f"{self.stderr_tail() or self._write_error or 'no message'}",
                            "Bộ mã hoá âm thanh trực tiếp bị lỗi.")

    def kill(self) -> None:
        """Stop ffmpeg at once (no flush) and release everything; safe to call twice."""
        self._kill()
        try:
            self.close()
        except LiveError:
            pass

    def __enter__(self) -> LiveEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except LiveError as failure:  # the exception in flight says more
            logger.warning("live %s: %s", self.mount, failure)

    # ----------------------------------------------------------- threads

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._ended_by_us = True
            self._proc.kill()

    def _gone(self) -> LiveError:
        self._stderr_thread.join(0.5)  # its last words, if it is still saying them
        status = self._proc.poll()
        detail = self.stderr_tail() or self._write_error or "no message"
        return LiveError("live.encoder_gone", f"the live encoder has ended (status {status}): {detail}",
                         "Bộ mã hoá âm thanh trực tiếp đã dừng.")

    def _write(self) -> None:
        stdin: IO[bytes] | None = self._proc.stdin
        assert stdin is not None
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        break  # closing and drained
                    chunk = self._queue[0]
                view = memoryview(chunk)
                while view:
                    written = stdin.write(view)
                    view = view[written or 0:]
                with self._cond:
                    self._queue.popleft()
                    self._queued -= len(chunk)
        except OSError as exc:  # BrokenPipeError: ffmpeg has ended
            self._write_error = f"{type(exc).__name__}: {exc}"
            logger.info("live %s: writing to ffmpeg failed: %s", self.mount, exc)
            with self._cond:
                self._queue.clear()
                self._queued = 0
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _read_stderr(self) -> None:
        pipe = self._proc.stderr
        assert pipe is not None
        # Read through a buffer: the pipe itself is unbuffered (bufsize=0, for stdin's sake).
        with open(pipe.fileno(), "rb", closefd=False) as stream:
            for raw in stream:
                line = mask_credentials(raw.decode("utf-8", "replace").strip(), self._secret)
                if not line:
                    continue
                with self._cond:
                    self._stderr.append(line)
                logger.debug("live %s: ffmpeg: %s", self.mount, line)
        pipe.close()


def _forced(input_format: str | None) -> list[str]:
    """``-f <demuxer>`` for a named input format (one of :data:`audio.ffmpeg.DEMUXERS`), else nothing."""
    if input_format is None:
        return []
    if input_format not in DEMUXERS:
        raise LiveError("live.bad_format", f"input format {input_format!r} is not accepted",
                        "Định dạng âm thanh trực tiếp không được hỗ trợ.")
    return ["-f", input_format]


def _output_args(codec: str, bitrate_k: int, sample_rate: int) -> list[str]:
    """Encoder and muxer options: mono MP3 (the distribution format), or Opus in Ogg (48 kHz, 20 ms pages)."""
    if codec == "opus":
        return ["-ar", "48000", "-c:a", "libopus", "-b:a", f"{bitrate_k}k", "-application", "voip",
                "-page_duration", "20000", "-content_type", "audio/ogg", "-f", "ogg"]
    return ["-ar", str(sample_rate), "-c:a", "libmp3lame", "-b:a", f"{bitrate_k}k", "-write_xing", "0",
            "-id3v2_version", "0", "-content_type", "audio/mpeg", "-f", "mp3"]
