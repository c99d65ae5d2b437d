"""Helpers for the live-audio tests: a browser-like WebM/Opus recording with clicks, cut the way
MediaRecorder hands it over, fed in real time, and a listener that records when each sample arrived.

:func:`run_live` feeds the chunks to an encoder on their MediaRecorder schedule while a
:class:`Listener` plays the Icecast mount through the receiver's own stream reader
(:class:`receiver.relay.RelayStream`); :func:`match_clicks` finds the clicks in what the
listener received and pairs them with the ones sent, giving for each the delay from
feeding its chunk to its arrival in the listener's buffer, and to the moment the
receiver's relay engine would play it (its jitter buffer and Icecast's burst included).
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audio.ffmpeg import ffmpeg_exe
from receiver.playout.relay import RELAY_BUFFER_MS
from receiver.playout.stage import CHUNK_MS
from receiver.relay import RelayStream

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44100
CLICK_HZ = 1000
CLICK_MS = 20
SLICE_S = 0.25
"""MediaRecorder's timeslice: the browser hands over a chunk every 250 ms."""
THRESHOLD = 0.25
"""A click's onset: the first sample above this fraction of full scale after a quiet stretch."""
POLL_S = 0.005


def ffprobe_exe() -> str | None:
    """ffprobe next to the ffmpeg in use (the chunking needs packet positions), or None."""
    return shutil.which("ffprobe")


def make_webm(workdir: Path, duration_s: float, clicks_s: Sequence[float]) -> Path:
    """A WebM/Opus recording like a browser's: silence with a full-scale 1 kHz click of 20 ms at each time.

    Written to a pipe (``-live 1``, not seekable) as MediaRecorder writes it: no cues, no sizes patched later.
    """
    terms = "+".join(f"between(t\\,{c:.3f}\\,{c + CLICK_MS / 1000:.3f})" for c in clicks_s) or "0"
    expr = f"aevalsrc=0.999*sin(2*PI*{CLICK_HZ}*t)*({terms}):s=48000:d={duration_s}"
    out = workdir / "voice.webm"
    with open(out, "wb") as sink:
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", expr, "-ac", "1",
                        "-c:a", "libopus", "-b:a", "32k", "-live", "1", "-f", "webm", "pipe:1"],
                       stdout=sink, check=True)
    return out


def media_chunks(path: Path, slice_s: float = SLICE_S) -> list[bytes]:
    """``path`` cut into the chunks MediaRecorder would hand over: chunk k ends before the first packet at or
    after ``(k + 1) * slice_s`` of media time (the first chunk also holds the header)."""
    probe = ffprobe_exe()
    assert probe is not None, "ffprobe is needed to cut a recording at packet boundaries"
    out = subprocess.run([probe, "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time,pos",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    packets = [(float(p["pts_time"]), int(p["pos"])) for p in json.loads(out)["packets"]
               if "pos" in p and "pts_time" in p]
    data = path.read_bytes()
    cuts: list[int] = []
    k = 1
    for pts, pos in packets:
        while pts >= k * slice_s:
            cuts.append(pos)
            k += 1
    bounds = [0, *[c for c in cuts if c > 0], len(data)]
    chunks: list[bytes] = []
    last = 0
    for end in bounds[1:]:
        if end >= last:
            chunks.append(data[last:end])
            last = end
    return chunks


def find_clicks(pcm: bytes, threshold: float = THRESHOLD, quiet_s: float = 0.3) -> list[int]:
    """Sample indexes (s16le mono) where a click starts: above ``threshold`` after ``quiet_s`` below it."""
    limit = int(threshold * 32767)
    quiet = int(quiet_s * SAMPLE_RATE)
    samples = memoryview(pcm[: len(pcm) - len(pcm) % 2]).cast("h")
    found: list[int] = []
    last = -quiet - 1
    for i, value in enumerate(samples):
        if value > limit or value < -limit:
            if i - last > quiet:
                found.append(i)
            last = i
    return found


class Listener:
    """Plays ``url`` with the receiver's :class:`RelayStream` and notes when each sample arrived."""

    def __init__(self, url: str) -> None:
        self.stream = RelayStream(url, SAMPLE_RATE, 1, retry_max_s=0.5, label="live-test")
        self.pcm = bytearray()
        self.arrivals: list[tuple[float, int]] = []
        """(monotonic time, samples received up to then), one entry per take."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="live-listener", daemon=True)

    def start(self) -> Listener:
        self.stream.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.stream.stop()

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    def _drain(self) -> None:
        while not self._stop.is_set():
            data = self.stream.take(1 << 20)
            if data:
                self.pcm += data
                self.arrivals.append((time.monotonic(), len(self.pcm) // 2))
            else:
                self._stop.wait(POLL_S)

    def arrived_at(self, sample: int) -> float:
        """When ``sample`` reached the buffer (within :data:`POLL_S`)."""
        for when, total in self.arrivals:
            if total > sample:
                return when
        raise ValueError(f"sample {sample} never arrived")

    def played_at(self, sample: int, jitter_ms: int = RELAY_BUFFER_MS, chunk_ms: int = CHUNK_MS) -> float:
        """When the relay engine would play ``sample``: it waits for ``jitter_ms`` buffered, then takes
        ``chunk_ms`` each ``chunk_ms`` and waits again after running dry (as receiver.playout.relay does)."""
        chunk = SAMPLE_RATE * chunk_ms // 1000
        jitter = SAMPLE_RATE * jitter_ms // 1000
        if not self.arrivals:
            raise ValueError("nothing arrived")
        arrivals = self.arrivals
        i = 0  # arrivals[:i] have happened by ``now``
        now = arrivals[0][0]
        played = 0
        buffering = True
        while True:
            while i < len(arrivals) and arrivals[i][0] <= now:
                i += 1
            got = arrivals[i - 1][1] if i else 0
            if buffering and got - played >= jitter:
                buffering = False
            if not buffering:
                n = min(chunk, got - played)
                if played <= sample < played + n:
                    return now + (sample - played) / SAMPLE_RATE
                played += n
                buffering = n < chunk
            if i >= len(arrivals) and (buffering or played >= got):
                raise ValueError(f"sample {sample} was never played")
            now += chunk_ms / 1000


@dataclass
class LiveRun:
    """What one live run fed and what the listener received."""

    clicks_s: list[float]
    fed_at: list[float]
    """Monotonic time at which each chunk was fed (chunk k holds media up to (k + 1) * SLICE_S)."""
    listener: Listener
    found: list[int] = field(default_factory=list)
    matched: list[tuple[float, int]] = field(default_factory=list)
    """(click's media time, sample index in the received PCM) for each click received."""

    def fed_click_at(self, click_s: float) -> float:
        """When the chunk holding the click at ``click_s`` was fed."""
        return self.fed_at[min(int(click_s / SLICE_S), len(self.fed_at) - 1)]

    def arrival_delays(self) -> list[float]:
        """Seconds from feeding each received click's chunk to its arrival in the listener's buffer."""
        return [self.listener.arrived_at(i) - self.fed_click_at(c) for c, i in self.matched]

    def play_delays(self) -> list[float]:
        """Seconds from feeding each received click's chunk to when the relay engine would play it."""
        return [self.listener.played_at(i) - self.fed_click_at(c) for c, i in self.matched]


def match_clicks(clicks_s: Sequence[float], found: Sequence[int], tolerance_s: float = 0.08
                 ) -> list[tuple[float, int]]:
    """Pair the clicks found in a received stream with the ones sent.

    A listener joins late, so it holds the last clicks; they are paired from the end, and the spacing of
    every pair must match the spacing sent (within ``tolerance_s``), else an AssertionError says where.
    """
    n = min(len(found), len(clicks_s))
    sent = list(clicks_s)[len(clicks_s) - n:]
    got = list(found)[len(found) - n:]
    for k in range(1, n):
        want = sent[k] - sent[k - 1]
        have = (got[k] - got[k - 1]) / SAMPLE_RATE
        assert abs(want - have) <= tolerance_s, (
            f"clicks {k - 1} and {k} of the received stream are {have:.3f} s apart, sent {want:.3f} s apart")
    return list(zip(sent, got, strict=True))


def run_live(chunks: Sequence[bytes], feed: Callable[[bytes], None], listener: Listener,
             clicks_s: Sequence[float], *, after: Callable[[], None] | None = None, tail_s: float = 1.5) -> LiveRun:
    """Feed ``chunks`` on MediaRecorder's schedule (chunk k at start + (k + 1) * SLICE_S), then call ``after``
    (close the encoder), give the listener ``tail_s`` more, stop it and pair the clicks."""
    fed_at: list[float] = []
    start = time.monotonic()
    for k, chunk in enumerate(chunks):
        due = start + (k + 1) * SLICE_S
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        fed_at.append(time.monotonic())
        feed(chunk)
    if after is not None:
        after()
    time.sleep(tail_s)
    listener.stop()
    run = LiveRun(list(clicks_s), fed_at, listener)
    run.found = find_clicks(bytes(listener.pcm))
    run.matched = match_clicks(clicks_s, run.found)
    return run


def summary(delays: Sequence[float]) -> str:
    """``median / max`` in milliseconds, for logs."""
    if not delays:
        return "no clicks"
    return f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms (n={len(delays)})"
