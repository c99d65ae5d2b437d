"""A live stream for a relay item: decoded in the background into a bounded PCM buffer, reconnecting.

:class:`RelayStream` owns one thread that runs a :class:`~receiver.decoder.StreamDecoder`
(ffmpeg) and appends what it decodes to a buffer the player drains at real time
(:meth:`RelayStream.take`). When ffmpeg ends (the server closed, the network
dropped and ffmpeg's own reconnect gave up) or stalls (no audio for ``stall_s``
while the player has nothing left to play), the thread starts a new ffmpeg after
a backoff that doubles from ``RETRY_MIN_S`` up to ``retry_max_s`` and goes back
to the minimum once a connection delivered audio again.

The buffer is bounded (``max_buffer_s``): when it is full the thread stops
reading, ffmpeg blocks on its pipe and the server's TCP window closes, so a
server that sends faster than real time (Icecast's burst on connect, HLS
fetching whole segments) never makes memory grow.

What to play, when to fall back and what to report is the agent's business
(:func:`receiver.playout.relay.play_relay`); this module only keeps audio coming.
"""

from __future__ import annotations

import logging
import select
import threading
import time

from receiver.decoder import DecoderError, StreamDecoder

logger = logging.getLogger(__name__)

RETRY_MIN_S = 0.25
"""First wait before starting ffmpeg again after a drop."""
READ_BYTES = 64 * 1024
POLL_S = 0.1


class RelayStream:
    """Decode ``url`` into a PCM buffer until :meth:`stop`, restarting ffmpeg when the stream drops."""

    def __init__(
        self,
        url: str,
        sample_rate: int = 44100,
        channels: int = 1,
        *,
        stall_s: float = 5.0,
        retry_max_s: float = 4.0,
        max_buffer_s: float = 30.0,
        label: str = "",
    ) -> None:
        self.url = url
        self.sample_rate = sample_rate
        self.channels = channels
        self.stall_s = stall_s
        self.retry_max_s = max(RETRY_MIN_S, retry_max_s)
        self.frame = 2 * channels
        self.max_buffer = int(max_buffer_s * sample_rate) * self.frame
        self.label = label or url
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._decoder: StreamDecoder | None = None
        self.starts = 0
        """How many times ffmpeg was started (the first connection and every reconnect attempt)."""
        self.connections = 0
        """How many of those delivered audio."""
        self.last_error = ""
        """Why the last ffmpeg ended (its stderr, a stall, or that it could not run), for reports."""
        self.up_since: float | None = None
        """``time.monotonic()`` when the current ffmpeg delivered its first audio; None while down."""
        self.last_data: float | None = None
        """``time.monotonic()`` of the last audio received."""
        self.received_bytes = 0

    # ----------------------------------------------------------- player side

    def start(self) -> None:
        """Start connecting in the background."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Kill ffmpeg and end the thread; safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            decoder = self._decoder
        if decoder is not None:
            decoder.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                logger.warning("relay %s: reader thread did not stop", self.label)

    def available(self) -> int:
        """Whole frames' bytes buffered now."""
        with self._cond:
            return len(self._buffer) - len(self._buffer) % self.frame

    def take(self, n_bytes: int) -> bytes:
        """Up to ``n_bytes`` of buffered PCM (whole frames; empty when nothing is buffered)."""
        with self._cond:
            n = min(n_bytes, len(self._buffer))
            n -= n % self.frame
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
            self._cond.notify_all()
            return data

    def keep_latest(self, n_bytes: int) -> None:
        """Drop all but the newest ``n_bytes`` (whole frames): keeps the live edge while nothing is taken."""
        with self._cond:
            excess = len(self._buffer) - n_bytes
            if excess > 0:
                excess += (self.frame - excess % self.frame) % self.frame
                del self._buffer[:excess]
                self._cond.notify_all()

    def up_for(self, now: float | None = None) -> float:
        """Seconds the current connection has been delivering audio (0 while down)."""
        since = self.up_since
        if since is None:
            return 0.0
        return (time.monotonic() if now is None else now) - since

    # ----------------------------------------------------------- the thread

    def _run(self) -> None:
        delay = RETRY_MIN_S
        while not self._stop.is_set():
            delivered = self._one_connection()
            if self._stop.is_set():
                break
            if delivered:
                delay = RETRY_MIN_S
            logger.info("relay %s: stream down (%s); reconnecting in %.2f s", self.label, self.last_error, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_max_s)

    def _one_connection(self) -> bool:
        """Run one ffmpeg until it ends, stalls or we stop; True if it delivered audio."""
        try:
            decoder = StreamDecoder(self.url, self.sample_rate, self.channels)
        except DecoderError as exc:
            self.last_error = str(exc)
            return False
        self.starts += 1
        with self._cond:
            self._decoder = decoder
        if self._stop.is_set():
            decoder.kill()
        delivered = False
        started = time.monotonic()
        last = started
        reason = ""
        try:
            while not self._stop.is_set():
                with self._cond:
                    while len(self._buffer) >= self.max_buffer and not self._stop.is_set():
                        self._cond.wait(POLL_S)  # full: let ffmpeg block; the wait is not a stall
                        last = time.monotonic()
                if self._stop.is_set():
                    break
                fd = decoder.fileno()
                if fd < 0:
                    break
                ready, _, _ = select.select([fd], [], [], POLL_S)
                now = time.monotonic()
                if not ready:
                    # Quiet is normal between HLS segments while the buffer still plays; it is a stall
                    # only once the player has run dry too.
                    if now - last > self.stall_s and self.available() == 0:
                        reason = f"no audio for {now - last:.1f} s"
                        break
                    continue
                data = decoder.read_available(READ_BYTES)
                if not data:
                    break
                last = now
                if not delivered:
                    delivered = True
                    self.connections += 1
                    self.up_since = now
                    logger.info("relay %s: audio flowing after %.2f s (start %d)", self.label, now - started,
                                self.starts)
                self.last_data = now
                self.received_bytes += len(data)
                with self._cond:
                    self._buffer += data
        finally:
            self.up_since = None
            decoder.kill()
            decoder.close()
            with self._cond:
                self._decoder = None
                self._buffer = self._buffer[: len(self._buffer) - len(self._buffer) % self.frame]
        if not self._stop.is_set():
            detail = decoder.errors()
            status = decoder.returncode
            self.last_error = reason or detail or f"ffmpeg ended (status {status})"
        return delivered
