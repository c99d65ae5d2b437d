"""Benchmark: live voice from feeding a browser chunk to a receiver, through Icecast 2, against plain defaults.

    .venv/bin/python bench/live_voice.py [--clicks 20] [--late-join 14] [--variants baseline loaxa opus forced]

Makes a WebM/Opus recording as a browser's MediaRecorder would (mono, 32 kbps,
silence with a 20 ms full-scale 1 kHz click every 1.5 s), cuts it into 250 ms
chunks at packet boundaries and feeds them on MediaRecorder's schedule (chunk k
at start + (k + 1) x 250 ms). Two listeners play the mount with the receiver's
own stream reader (``receiver.relay.RelayStream``): one from the start of the
session (it connects as soon as the mount exists) and one that joins at
``--late-join`` seconds (a receiver that reconnects during a session). For each
click it reports the delay from feeding its chunk

  buffer  to its arrival in the listener's PCM buffer, and
  played  to when the receiver's relay engine would play it (it waits for
          500 ms buffered, then takes 100 ms every 100 ms; see
          receiver/playout/relay.py), which adds whatever Icecast's burst and
          the receiver's decoder had buffered ahead of live.

Variants, each with its own Icecast, one after another:

  baseline  Icecast's defaults (64 KiB burst) and ffmpeg's:
            ffmpeg -i pipe:0 -ac 1 -c:a libmp3lame -b:a 48k -content_type audio/mpeg -f mp3 icecast://...
  loaxa     controller.icecast.EmbeddedIcecast and audio.live.LiveEncoder, MP3 on /live
  opus      the same with codec="opus", Ogg on /live.ogg
  forced    loaxa with a 4 KiB burst and receivers that name the MP3 demuxer (``-f mp3``; a change to
            receiver/decoder.py that is not made: this variant patches it in this process only)

and prints p50/p99 per variant and listener (the late one counts only the clicks
fed after it joined), the ratios of the p50s to the baseline's, and "start s":
from feeding the first chunk to the first audio at the listener that waited for
the mount (ffmpeg's format detection, Icecast's 1,400-byte MP3 blocks and the
receiver's decoder start-up are in it).
Not a test: nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audio.ffmpeg import ffmpeg_exe  # noqa: E402
from audio.live import LiveEncoder  # noqa: E402
from controller.icecast import EmbeddedIcecast  # noqa: E402
from receiver import decoder as receiver_decoder  # noqa: E402
from receiver.playout.relay import RELAY_BUFFER_MS  # noqa: E402
from receiver.playout.stage import CHUNK_MS  # noqa: E402
from receiver.relay import RelayStream  # noqa: E402

RATE = 44100
SLICE_S = 0.25
SPACING_S = 1.5
THRESHOLD = int(0.25 * 32767)
VARIANTS = ("baseline", "loaxa", "opus", "forced")


# ----------------------------------------------------------------- the recording


def make_chunks(workdir: Path, clicks: Sequence[float], duration_s: float) -> list[bytes]:
    """A browser-like WebM/Opus recording with clicks, as MediaRecorder's 250 ms chunks."""
    terms = "+".join(f"between(t\\,{c:.3f}\\,{c + 0.02:.3f})" for c in clicks)
    path = workdir / "voice.webm"
    with open(path, "wb") as sink:
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                        f"aevalsrc=0.999*sin(2*PI*1000*t)*({terms}):s=48000:d={duration_s}", "-ac", "1",
                        "-c:a", "libopus", "-b:a", "32k", "-live", "1", "-f", "webm", "pipe:1"],
                       stdout=sink, check=True)
    probe = shutil.which("ffprobe")
    if probe is None:
        raise SystemExit("ffprobe is needed (apt install ffmpeg)")
    packets = json.loads(subprocess.run([probe, "-v", "error", "-select_streams", "a:0", "-show_entries",
                                         "packet=pts_time,pos", "-of", "json", str(path)],
                                        capture_output=True, text=True, check=True).stdout)["packets"]
    data = path.read_bytes()
    cuts, k = [], 1
    for p in packets:
        while float(p["pts_time"]) >= k * SLICE_S:
            cuts.append(int(p["pos"]))
            k += 1
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# ----------------------------------------------------------------- a listener


@dataclass
class Listener:
    """A receiver's stream reader on ``url``, drained every 5 ms; notes when each sample arrived."""

    url: str
    pcm: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    stream: RelayStream | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.stream = RelayStream(self.url, RATE, 1, retry_max_s=0.5, label="bench")
        self.stream.start()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.stream is not None
        while not self._stop.is_set():
            data = self.stream.take(1 << 20)
            if data:
                self.pcm += data
                self.arrivals.append((time.monotonic(), len(self.pcm) // 2))
            else:
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.stream is not None:
            self.stream.stop()

    def clicks(self) -> list[int]:
        samples = memoryview(bytes(self.pcm[: len(self.pcm) - len(self.pcm) % 2])).cast("h")
        found: list[int] = []
        last = -RATE
        for i, v in enumerate(samples):
            if v > THRESHOLD or v < -THRESHOLD:
                if i - last > RATE * 0.3:
                    found.append(i)
                last = i
        return found

    def arrived_at(self, sample: int) -> float:
        return next(t for t, total in self.arrivals if total > sample)

    def played_at(self, sample: int) -> float:
        """The relay engine's clock: 500 ms buffered before it plays, 100 ms per step, rebuffer on underrun."""
        chunk, jitter = RATE * CHUNK_MS // 1000, RATE * RELAY_BUFFER_MS // 1000
        now, i, played, buffering = self.arrivals[0][0], 0, 0, True
        while True:
            while i < len(self.arrivals) and self.arrivals[i][0] <= now:
                i += 1
            got = self.arrivals[i - 1][1] if i else 0
            if buffering and got - played >= jitter:
                buffering = False
            if not buffering:
                n = min(chunk, got - played)
                if played <= sample < played + n:
                    return now + (sample - played) / RATE
                played += n
                buffering = n < chunk
            if i >= len(self.arrivals) and (buffering or played >= got):
                raise ValueError("never played")
            now += CHUNK_MS / 1000


# ----------------------------------------------------------------- one variant


@dataclass
class Result:
    start_s: float | None = None
    """From feeding the first chunk to the first audio at the listener that joined at the start."""
    delays: dict[str, list[float]] = field(default_factory=dict)


def run_variant(variant: str, chunks: list[bytes], clicks: list[float], late_join_s: float, workdir: Path) -> Result:
    mount = "/live.ogg" if variant == "opus" else "/live"
    icecast = EmbeddedIcecast(workdir / variant, burst_size=65535 if variant == "baseline" else
                              4096 if variant == "forced" else None).start()
    restore = receiver_decoder.stream_input_args
    def forced_mp3(url: str) -> list[str]:
        return ["-f", "mp3", *restore(url)]

    if variant == "forced":
        receiver_decoder.stream_input_args = forced_mp3
    feed: Callable[[bytes], None]
    close: Callable[[], None]
    if variant == "baseline":
        proc = subprocess.Popen([ffmpeg_exe(), "-loglevel", "error", "-i", "pipe:0", "-ac", "1", "-c:a", "libmp3lame",
                                 "-b:a", "48k", "-content_type", "audio/mpeg", "-f", "mp3", icecast.source_url(mount)],
                                stdin=subprocess.PIPE)
        assert proc.stdin is not None
        stdin = proc.stdin

        def feed(chunk: bytes) -> None:
            stdin.write(chunk)
            stdin.flush()

        def close() -> None:
            stdin.close()
            proc.wait(10)
    else:
        encoder = LiveEncoder(icecast.source_url(mount), input_format="webm",
                              codec="opus" if variant == "opus" else "mp3")
        feed, close = encoder.feed, encoder.close
    early, late = Listener(icecast.listen_url(mount)), Listener(icecast.listen_url(mount))
    early.start()
    result = Result()
    fed_at: list[float] = []
    joined = float("inf")
    try:
        start = time.monotonic()
        for k, chunk in enumerate(chunks):
            pause = start + (k + 1) * SLICE_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if k * SLICE_S >= late_join_s and late.stream is None:
                late.start()
                joined = time.monotonic()
            fed_at.append(time.monotonic())
            feed(chunk)
        close()
        time.sleep(1.5)
    finally:
        early.stop()
        late.stop()
        icecast.stop()
        receiver_decoder.stream_input_args = restore
    if early.arrivals:
        result.start_s = early.arrivals[0][0] - fed_at[0]
    for name, listener, since in (("start", early, 0.0), ("late", late, joined)):
        found = listener.clicks()
        n = min(len(found), len(clicks))
        pairs = list(zip(clicks[len(clicks) - n:], found[len(found) - n:], strict=True))
        fed = [fed_at[min(int(c / SLICE_S), len(fed_at) - 1)] for c, _ in pairs]
        # A late listener also receives clicks fed before it joined (Icecast's burst): not counted.
        pairs = [p for p, f in zip(pairs, fed, strict=True) if f >= since]
        fed = [f for f in fed if f >= since]
        result.delays[f"{name} buffer"] = [listener.arrived_at(s) - f for (_, s), f in zip(pairs, fed, strict=True)]
        result.delays[f"{name} played"] = [listener.played_at(s) - f for (_, s), f in zip(pairs, fed, strict=True)]
    return result


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def main() -> None:
    """Run the variants and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--late-join", type=float, default=14.0, help="seconds into the session the second listener joins")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="loaxa-bench-live-"))
    clicks = [SPACING_S * (k + 1) for k in range(args.clicks)]
    chunks = make_chunks(workdir, clicks, clicks[-1] + 1.5)
    print(f"ffmpeg {ffmpeg_exe()}, {os.cpu_count()} CPUs; {len(clicks)} clicks, {len(chunks)} chunks of "
          f"{SLICE_S * 1000:.0f} ms, late listener joins at {args.late_join:.0f} s")
    results = {v: run_variant(v, chunks, clicks, args.late_join, workdir) for v in args.variants}
    print(f"\n{'variant':<9} {'start s':>7} {'listener':<15} {'n':>3} {'p50 ms':>7} {'p99 ms':>7} {'p50/base':>9}")
    base = results.get("baseline")
    for variant, result in results.items():
        start = f"{result.start_s:7.2f}" if result.start_s is not None else "      -"
        for name, delays in result.delays.items():
            if not delays:
                print(f"{variant:<9} {start} {name:<15} {0:3d}       -       -  (no click arrived)")
                continue
            ratio = ""
            if base is not None and base.delays.get(name):
                ratio = f"{statistics.median(delays) / statistics.median(base.delays[name]):9.2f}"
            print(f"{variant:<9} {start} {name:<15} {len(delays):3d} {pct(delays, 50):7.0f} {pct(delays, 99):7.0f} "
                  f"{ratio}")
            start = "       "
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
