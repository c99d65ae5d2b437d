"""Audio output back ends behind one interface.

``Sink.open(item_id, start_ms_planned, sample_rate, channels)`` returns an
:class:`Output`; ``Output.write(pcm)`` takes signed 16-bit little-endian PCM and,
like a sound card, consumes it in real time: it returns when the wall clock has
reached the time of the first sample plus the duration of everything written.

:class:`FileSink` records what would have been played, for tests and the demo:
``<dir>/<item>-<planned_start_ms>.pcm`` (raw s16le; ``/`` in an item id becomes
``_``; a repeated open of the same item adds ``.2``, ``.3``... before the
extension) and a JSON sidecar with the same stem, rewritten atomically right
after the first write and at close::

    {"item_id": "...", "planned_start_ms": 1700000000000,
     "first_sample_ms": 1700000000000.4, "sample_rate": 44100, "channels": 1,
     "bytes": 88200, "closed_ms": 1700000001000.9}

``first_sample_ms`` is the wall-clock epoch time (ms, float) at which the first
sample was written; ``closed_ms`` is null until the output is closed.
:class:`NullSink` paces the same way and writes nothing.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

SAMPLE_BYTES = 2  # s16le


def _wall_ms() -> float:
    return time.time_ns() / 1_000_000


class Output:
    """One item being played: write PCM at real time, then close (subclasses emit the samples)."""

    def __init__(self, item_id: str, planned_start_ms: int, sample_rate: int, channels: int) -> None:
        self.item_id = item_id
        self.planned_start_ms = planned_start_ms
        self.sample_rate = sample_rate
        self.channels = channels
        self.bytes_written = 0
        self.first_sample_ms: float | None = None
        self.closed_ms: float | None = None
        self._first_mono: float | None = None
        self._interrupt = threading.Event()
        self.volume = 100
        self.rate_ppm = 0.0
        """How much faster than nominal this device consumes samples (a sound card's clock error)."""
        self.inserted_frames = 0
        self.dropped_frames = 0
        self.tags: dict[str, Any] = {}
        """What the player says this output carries (``priority``, and ``mode`` live/drill for an alert)."""

    @property
    def _device_rate(self) -> float:
        return self.sample_rate * (1.0 + self.rate_ppm / 1e6)

    def device_frames(self) -> float | None:
        """Frames the device has consumed by now (its own clock), None before the first write."""
        if self._first_mono is None:
            return None
        written = self.bytes_written // (self.channels * SAMPLE_BYTES)
        return min(float(written), (time.monotonic() - self._first_mono) * self._device_rate)

    def set_volume(self, volume: int) -> None:
        """Set the output volume, 0-100 (a real device sets its mixer; the file sink records it)."""
        self.volume = max(0, min(100, int(volume)))
        self._volume_changed()

    def _volume_changed(self) -> None:
        """Called after :meth:`set_volume` (nothing by default)."""

    @property
    def played_ms(self) -> float:
        """Duration of the PCM written so far, in milliseconds."""
        return self.bytes_written * 1000.0 / (self.sample_rate * self.channels * SAMPLE_BYTES)

    def write(self, pcm: bytes) -> None:
        """Play ``pcm``; returns once it has been consumed at real time."""
        if self.closed_ms is not None:
            raise ValueError(f"output for {self.item_id} is closed")
        if not pcm:
            return
        first = self._first_mono is None
        if first:
            self._first_mono = time.monotonic()
            self.first_sample_ms = _wall_ms()
        self._emit(pcm)
        self.bytes_written += len(pcm)
        if first:
            self._started()
        assert self._first_mono is not None
        due = self._first_mono + self.bytes_written / (self.channels * SAMPLE_BYTES) / self._device_rate
        remaining = due - time.monotonic()
        if remaining > 0:
            self._interrupt.wait(remaining)

    def interrupt(self) -> None:
        """Make a pending or future ``write`` return without waiting (used on shutdown)."""
        self._interrupt.set()

    def close(self) -> None:
        """Finish the output; safe to call twice."""
        if self.closed_ms is not None:
            return
        self.closed_ms = _wall_ms()
        self._closed()

    def _emit(self, pcm: bytes) -> None:
        """Hand the samples to the device (nothing by default)."""

    def _started(self) -> None:
        """Called once, right after the first samples were written."""

    def _closed(self) -> None:
        """Called once by :meth:`close`."""


class Sink(abc.ABC):
    """Where a receiver's audio goes."""

    @abc.abstractmethod
    def open(self, item_id: str, start_ms_planned: int, sample_rate: int, channels: int) -> Output:
        """Open an output for one item."""


class _NullOutput(Output):
    """Paced like a sound card; discards the samples."""


class NullSink(Sink):
    """Consumes audio at real time (or ``rate_ppm`` off it) and discards it."""

    def __init__(self, rate_ppm: float = 0.0) -> None:
        self.rate_ppm = rate_ppm

    def open(self, item_id: str, start_ms_planned: int, sample_rate: int, channels: int) -> Output:
        """A paced output that writes nothing."""
        output = _NullOutput(item_id, start_ms_planned, sample_rate, channels)
        output.rate_ppm = self.rate_ppm
        return output


class FileOutput(Output):
    """Records PCM to ``<stem>.pcm`` and its timing to ``<stem>.json``."""

    def __init__(self, pcm_path: Path, item_id: str, planned_start_ms: int, sample_rate: int, channels: int) -> None:
        super().__init__(item_id, planned_start_ms, sample_rate, channels)
        self.pcm_path = pcm_path
        self.sidecar_path = pcm_path.with_suffix(".json")
        self._fh: IO[bytes] | None = pcm_path.open("wb")

    def _emit(self, pcm: bytes) -> None:
        assert self._fh is not None
        self._fh.write(pcm)
        self._fh.flush()

    def _started(self) -> None:
        self._write_sidecar()

    def _closed(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        self._write_sidecar()

    def sidecar(self) -> dict[str, Any]:
        """The sidecar's content as it stands."""
        return {
            "item_id": self.item_id,
            "planned_start_ms": self.planned_start_ms,
            "first_sample_ms": self.first_sample_ms,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "bytes": self.bytes_written,
            "closed_ms": self.closed_ms,
            "volume": self.volume,
            "rate_ppm": self.rate_ppm,
            "inserted_frames": self.inserted_frames,
            "dropped_frames": self.dropped_frames,
            "tags": dict(self.tags),
        }

    def _volume_changed(self) -> None:
        if self.first_sample_ms is not None:
            self._write_sidecar()

    def _write_sidecar(self) -> None:
        tmp = self.sidecar_path.with_name(self.sidecar_path.name + ".tmp")
        tmp.write_text(json.dumps(self.sidecar(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.sidecar_path)


class FileSink(Sink):
    """Writes what would be played into ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path, rate_ppm: float = 0.0) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.rate_ppm = rate_ppm

    def open(self, item_id: str, start_ms_planned: int, sample_rate: int, channels: int) -> FileOutput:
        """Create the next free ``<item>-<start>[.<n>].pcm`` and return its output."""
        stem = f"{item_id.replace('/', '_')}-{start_ms_planned}"
        with self._lock:
            n = 1
            while True:
                name = stem if n == 1 else f"{stem}.{n}"
                pcm = self.dir / f"{name}.pcm"
                if not pcm.exists():
                    break
                n += 1
            output = FileOutput(pcm, item_id, start_ms_planned, sample_rate, channels)
            output.rate_ppm = self.rate_ppm
        logger.debug("file sink: recording %s to %s", item_id, pcm)
        return output


class SinkError(RuntimeError):
    """The audio device cannot be opened (no card, no aplay, device busy)."""


class AlsaOutput(Output):
    """Feeds ``aplay`` (raw s16le on stdin) for one item; paced like the other outputs."""

    def __init__(self, proc: subprocess.Popen[bytes], item_id: str, planned_start_ms: int, sample_rate: int,
                 channels: int, mixer: Callable[[int], None]) -> None:
        super().__init__(item_id, planned_start_ms, sample_rate, channels)
        self._proc = proc
        self._mixer = mixer

    def _emit(self, pcm: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(pcm)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            detail = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
            raise SinkError(f"aplay stopped: {detail or exc}") from exc

    def _volume_changed(self) -> None:
        self._mixer(self.volume)

    def _closed(self) -> None:
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()


class AlsaSink(Sink):
    """A real sound card through ALSA: ``aplay -D <device>`` per item, volume through ``amixer``.

    Binaries can be named by ``LOAXA_APLAY`` and ``LOAXA_AMIXER``. ``aplay``
    does not report the card's position, so drift correction sees the nominal
    clock here (the card's own rate error stays uncorrected on this back end).
    """

    def __init__(self, device: str = "default", mixer_control: str = "PCM") -> None:
        self.device = device
        self.mixer_control = mixer_control
        self.aplay = os.environ.get("LOAXA_APLAY") or shutil.which("aplay") or "aplay"
        self.amixer = os.environ.get("LOAXA_AMIXER") or shutil.which("amixer") or "amixer"

    def set_volume(self, volume: int) -> None:
        """Set the mixer (best effort: a card without that control keeps its level, logged)."""
        try:
            subprocess.run([self.amixer, "-q", "sset", self.mixer_control, f"{volume}%"], check=True,
                           capture_output=True, timeout=5)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("amixer: cannot set %s to %d%% (is alsa-utils installed?): %s", self.mixer_control,
                           volume, exc)

    def open(self, item_id: str, start_ms_planned: int, sample_rate: int, channels: int) -> AlsaOutput:
        """Start aplay on the device; raises SinkError when it cannot play."""
        cmd = [self.aplay, "-q", "-D", self.device, "-t", "raw", "-f", "S16_LE", "-r", str(sample_rate),
               "-c", str(channels), "-"]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            logger.error("cannot run %s: is alsa-utils installed? %s", self.aplay, exc)
            raise SinkError(f"cannot run aplay: {exc}") from exc
        time.sleep(0.05)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            for pipe in (proc.stdin, proc.stderr):
                if pipe is not None:
                    pipe.close()
            raise SinkError(f"aplay -D {self.device} exited: {err or proc.returncode}")
        return AlsaOutput(proc, item_id, start_ms_planned, sample_rate, channels, self.set_volume)


def make_sink(kind: str, directory: str | Path, rate_ppm: float = 0.0, device: str = "default") -> Sink:
    """The sink a configuration names: ``file`` (into ``directory``) or ``null``.

    ``rate_ppm`` makes the sink consume audio that much faster (or slower) than
    nominal, like a sound card whose crystal is off: the player must correct it.
    """
    if kind == "file":
        return FileSink(directory, rate_ppm)
    if kind == "null":
        return NullSink(rate_ppm)
    if kind == "alsa":
        return AlsaSink(device)
    raise ValueError(f"unknown sink {kind!r}")
