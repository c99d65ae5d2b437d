"""The stage: the one live output, what plays on it, and the rules every engine follows.

Only one item plays at a time. An engine opens the output during the pre-roll
(:meth:`Stage.go_live` waits for the first sample's second), writes chunks held
to the system clock (:meth:`Stage.correct_drift`), asks :meth:`Stage.must_end`
before each chunk and gives the stage back with :meth:`Stage.end_live`.
The stage also remembers which items were played in this run (so that none
plays twice) and the next item's decoder started ahead (so it begins on time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver.cache import MediaCache
from receiver.config import ReceiverConfig
from receiver.decoder import Decoder
from receiver.gate import Orders
from receiver.holdings import Holdings
from receiver.reporter import Reporter
from receiver.sinks import Output, Sink, SinkError
from schedules.events import now_ms
from schedules.manifest import Item

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44100
CHANNELS = 1
BYTES_PER_MS = SAMPLE_RATE * CHANNELS * 2 / 1000.0
CHUNK_MS = 100
PREBUFFER_MS = 1000
JOIN_LEAD_MS = 300
"""When joining an item already under way, how far ahead the first sample is placed."""
LATE_START_TOLERANCE_MS = 500
"""A start missed by at most this much plays from the beginning instead of being joined at an offset."""
DRIFT_TOLERANCE_MS = 2.0
"""Drift between the output's clock and the system clock tolerated before frames are inserted or dropped."""
SPIN_S = 0.015
"""The last part of the wait before a start is one plain sleep, not an interruptible wait."""
PLAYED_MEMORY_MS = 24 * 3600 * 1000


def frames(ms: float) -> int:
    """Bytes of whole PCM frames lasting ``ms`` milliseconds (never negative)."""
    return max(0, int(ms * SAMPLE_RATE / 1000)) * 2 * CHANNELS


def now_ms_f() -> float:
    """The local clock, epoch milliseconds with a fraction."""
    return time.time_ns() / 1_000_000


@dataclass
class Prepared:
    """The next item's decoder, started during the end of the item before it."""

    key: tuple[str, int]
    decoder: Decoder
    buffer: bytes


def start_decoder(path: Path, offset_ms: int) -> tuple[Decoder, bytes]:
    """Start ffmpeg at ``offset_ms`` and read the prebuffer (may be empty on a bad file)."""
    decoder = Decoder(path, offset_ms, SAMPLE_RATE, CHANNELS)
    try:
        return decoder, decoder.read(frames(PREBUFFER_MS))
    except BaseException:
        decoder.close()
        raise


class Stage:
    """The live output of one receiver and the state of what plays on it."""

    def __init__(self, rx: str, config: ReceiverConfig, sink: Sink, cache: MediaCache, holdings: Holdings,
                 orders: Orders, reporter: Reporter, stop: threading.Event, volume: Callable[[], int]) -> None:
        self.rx = rx
        self.config = config
        self.sink = sink
        self.cache = cache
        self.holdings = holdings
        self.orders = orders
        self.reporter = reporter
        self.stop = stop
        self.volume = volume
        """The programme volume now (the ``volume`` command's, else the conf's)."""
        self.stop_current = threading.Event()
        """Set by a ``stop`` command: the item playing ends."""
        self.played: dict[tuple[str, int], int] = {}
        """``(item id, planned start)`` -> planned end of every item played (or given up) in this run."""
        self.playing: Item | None = None
        self.output: Output | None = None
        self.prepared: Prepared | None = None
        self.last_play_end_ms = 0
        self._planned = False
        """The item playing came from the timeline (not an alert or a test tone): it ends if withdrawn."""
        self._seen_generation = -1

    # -------------------------------------------------------------- timeline

    def next_item(self, now: int | None = None) -> tuple[str, Item] | None:
        """The next ``(scope, item)`` still to play: not yet ended and not played in this run."""
        at = now_ms() if now is None else now
        for scope, item in self.holdings.timeline():
            if item.end_ms > at and (item.id, item.start_ms) not in self.played:
                return scope, item
        return None

    def forget_old_plays(self, now: int) -> None:
        for key in [k for k, end in self.played.items() if end < now - PLAYED_MEMORY_MS]:
            del self.played[key]

    def start_point(self, item: Item) -> tuple[int, int]:
        """``(target_ms, offset_ms)``: play from the start if it is (nearly) now, else join under way."""
        now = now_ms()
        if now - item.start_ms <= LATE_START_TOLERANCE_MS:
            return item.start_ms, 0
        target = now + JOIN_LEAD_MS
        return target, target - item.start_ms

    # ------------------------------------------------------------ the output

    def open_output(self, item: Item, volume: int) -> Output:
        """Open the sink for ``item`` at ``volume`` (raising or clearing ``no_audio_device``)."""
        try:
            output = self.sink.open(item.id, item.start_ms, SAMPLE_RATE, CHANNELS)
        except SinkError as exc:
            self.reporter.set_fault("no_audio_device", True, reason=str(exc))
            raise
        self.reporter.set_fault("no_audio_device", False)
        output.set_volume(volume)
        return output

    def go_live(self, item: Item, volume: int, target: int, tags: dict[str, Any] | None = None) -> Output | None:
        """Open the output (pre-roll), wait for ``target`` and become the item playing.

        ``tags`` (an alert's ``mode``) go with the output, as its priority does.
        None when the agent stops during the wait (the output is closed then).
        """
        output = self.open_output(item, volume)
        output.tags = {"priority": item.priority, **(tags or {})}
        if not self.sleep_until(target):
            self.close_output(output, item)
            return None
        self.stop_current.clear()
        self._seen_generation = self.holdings.generation
        self._planned = self._in_timeline(item)
        self.output = output
        self.playing = item
        if self.stop.is_set():
            output.interrupt()
        return output

    def must_end(self, item: Item) -> str | None:
        """``stopped`` when the agent stops, else why the item is interrupted (:meth:`interruption`)."""
        if self.stop.is_set():
            return "stopped"
        return self.interruption(item)

    def interruption(self, item: Item) -> str | None:
        """Why the item playing must end now: a ``stop`` command, an emergency ready to play, or a
        test tone waiting (which pre-empts anything but an emergency)."""
        if self.stop_current.is_set():
            self.stop_current.clear()
            return "stopped_by_command"
        emergency = self.orders.emergency
        if emergency is not None and emergency.item.id != item.id and emergency.ready(self.cache):
            return "preempted"
        if self.orders.tone is not None and item.priority != "emergency":
            return "preempted"
        if self._planned and self.holdings.generation != self._seen_generation:
            # A new manifest: an item the controller withdrew (cancelled, a relay stopped) ends now.
            self._seen_generation = self.holdings.generation
            if not self._in_timeline(item):
                return "withdrawn"
        return None

    def _in_timeline(self, item: Item) -> bool:
        return any(i.id == item.id and i.start_ms == item.start_ms for _scope, i in self.holdings.timeline())

    def end_live(self) -> None:
        """Nothing plays any more (the output is closed by the caller)."""
        self.playing = None
        self.output = None
        self.last_play_end_ms = now_ms()

    def close_output(self, output: Output | None, item: Item) -> None:
        if output is None:
            return
        try:
            output.close()
        except Exception:
            logger.exception("rx %s: closing the output of %s failed", self.rx, item.id)

    def sleep_until(self, target_ms: float) -> bool:
        """Wait precisely until ``target_ms``; False if stopping.

        Interruptible waits first, then one plain ``sleep`` for the last ``SPIN_S``
        (nanosleep is precise to well under a millisecond; busy-waiting was not,
        once twenty receivers on two cores spun against each other).
        """
        while True:
            remaining = (target_ms - now_ms_f()) / 1000.0
            if remaining <= 0:
                return True
            if self.stop.is_set():
                return False
            if remaining > SPIN_S:
                self.stop.wait(remaining - SPIN_S)
                continue
            time.sleep(remaining)
            return True

    @staticmethod
    def correct_drift(output: Output, chunk: bytes) -> bytes:
        """Keep the device on the system clock: insert or drop frames when its position drifts.

        The device's position (frames it consumed, by its own clock) less the
        frames inserted and plus those dropped is where the content stands; the
        system clock says where it should stand. Past ``DRIFT_TOLERANCE_MS`` the
        difference is corrected, at most a tenth of a chunk at a time (repeating
        or skipping single frames is inaudible at that rate).
        """
        position = output.device_frames()
        if position is None or output.first_sample_ms is None:
            return chunk
        ideal = (now_ms_f() - output.first_sample_ms) * SAMPLE_RATE / 1000.0
        error = position - (output.inserted_frames - output.dropped_frames) - ideal
        if abs(error) <= DRIFT_TOLERANCE_MS * SAMPLE_RATE / 1000.0:
            return chunk
        frame = 2 * CHANNELS
        n = min(int(abs(error)), len(chunk) // frame // 10)
        if n <= 0:
            return chunk
        if error > 0:  # the device runs fast: the content is ahead, hold it back
            output.inserted_frames += n
            return chunk + chunk[-frame:] * n
        output.dropped_frames += n  # the device runs slow (or underran): catch up
        return chunk[: len(chunk) - n * frame]

    # ------------------------------------------------------- the next decoder

    def prepare_following(self) -> None:
        """During the end of an item, start the decoder of the next one so it begins on time."""
        if self.prepared is not None:
            return
        nxt = self.next_item()
        if nxt is None:
            return
        _scope, item = nxt
        if item.start_ms - self.config.preroll_ms > now_ms():
            return
        if item.media is None or item.kind == "relay":  # silence, or a stream: nothing to decode ahead
            return
        path = self.cache.path(item.media.sha256)
        if path is None:
            return
        try:
            decoder, buffer = start_decoder(path, 0)
        except Exception as exc:  # the item engine will try again and report it
            logger.debug("rx %s: cannot prepare %s: %s", self.rx, item.id, exc)
            return
        self.prepared = Prepared((item.id, item.start_ms), decoder, buffer)

    def take_prepared(self, key: tuple[str, int], offset_ms: int) -> Prepared | None:
        """The decoder prepared for ``key`` when it starts at the beginning; any other is closed."""
        prepared, self.prepared = self.prepared, None
        if prepared is not None and (prepared.key != key or offset_ms != 0):
            prepared.decoder.close()
            return None
        return prepared

    def discard_prepared(self) -> None:
        prepared, self.prepared = self.prepared, None
        if prepared is not None:
            prepared.decoder.close()
