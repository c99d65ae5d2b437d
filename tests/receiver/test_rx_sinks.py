"""Sinks pace audio in real time and record it; the decoder turns media into PCM with ffmpeg."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from receiver.decoder import Decoder, DecoderError
from receiver.sinks import FileSink, NullSink

from rx_support import Media

RATE = 44100
SECOND = RATE * 2  # mono s16le


def test_file_sink_paces_in_real_time_and_writes_sidecar(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "sink")
    output = sink.open("bulletin/morning", 1_700_000_000_000, RATE, 1)
    pcm = bytes(range(256)) * (SECOND // 256) + bytes(SECOND % 256)
    before_ms = time.time_ns() / 1e6
    t0 = time.monotonic()
    for i in range(0, len(pcm), SECOND // 10):
        output.write(pcm[i : i + SECOND // 10])
        if i == 0:
            sidecar = json.loads((tmp_path / "sink" / "bulletin_morning-1700000000000.json").read_text())
            assert sidecar["closed_ms"] is None
            assert sidecar["bytes"] == SECOND // 10
    elapsed = time.monotonic() - t0
    output.close()
    assert elapsed >= 0.95  # one second of audio takes one second
    stem = tmp_path / "sink" / "bulletin_morning-1700000000000"
    assert stem.with_suffix(".pcm").read_bytes() == pcm
    sidecar = json.loads(stem.with_suffix(".json").read_text())
    assert set(sidecar) == {
        "item_id",
        "planned_start_ms",
        "first_sample_ms",
        "sample_rate",
        "channels",
        "bytes",
        "closed_ms",
        "volume",
        "rate_ppm",
        "inserted_frames",
        "dropped_frames",
        "tags",
    }
    assert sidecar["tags"] == {}  # nothing said: the player tags what it plays (priority, an alert's mode)
    assert sidecar["item_id"] == "bulletin/morning"
    assert sidecar["planned_start_ms"] == 1_700_000_000_000
    assert sidecar["sample_rate"] == RATE and sidecar["channels"] == 1
    assert sidecar["bytes"] == len(pcm)
    assert before_ms <= sidecar["first_sample_ms"] <= before_ms + 500
    assert sidecar["closed_ms"] >= sidecar["first_sample_ms"] + 950
    # Opening the same item again never overwrites the first recording.
    again = sink.open("bulletin/morning", 1_700_000_000_000, RATE, 1)
    again.close()
    assert again.pcm_path.name == "bulletin_morning-1700000000000.2.pcm"


def test_null_sink_paces_too() -> None:
    output = NullSink().open("x", 0, RATE, 1)
    t0 = time.monotonic()
    for _ in range(5):
        output.write(bytes(SECOND // 10))
    output.close()
    assert time.monotonic() - t0 >= 0.45
    assert output.played_ms == pytest.approx(500)
    with pytest.raises(ValueError):
        output.write(b"\0\0")


def test_decoder_reads_pcm_from_offset(sine_mp3: Media) -> None:
    with Decoder(sine_mp3.path, 0) as dec:
        full = b"".join(iter(lambda: dec.read(SECOND), b""))
    assert abs(len(full) - 3 * SECOND) < SECOND // 10
    with Decoder(sine_mp3.path, 2000) as dec:
        tail = b"".join(iter(lambda: dec.read(SECOND), b""))
        assert dec.eof
    assert dec.returncode == 0
    assert abs(len(tail) - SECOND) < SECOND // 10
    assert len(tail) % 2 == 0


def test_decoder_close_reaps_a_running_ffmpeg(sine_mp3: Media) -> None:
    dec = Decoder(sine_mp3.path, 0)
    assert len(dec.read(1000)) == 1000
    dec.close()
    assert dec.returncode is not None and dec.returncode < 0  # killed and reaped, no zombie
    dec.close()


def test_decoder_reports_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"this is not audio" * 10)
    dec = Decoder(bad, 0)
    assert dec.read(SECOND) == b""
    dec.close()
    assert dec.returncode not in (0, None)
    assert dec.errors()


def test_missing_ffmpeg_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, sine_mp3: Media) -> None:
    monkeypatch.setenv("LOAXA_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(DecoderError, match="is ffmpeg installed"):
        Decoder(sine_mp3.path, 0)
