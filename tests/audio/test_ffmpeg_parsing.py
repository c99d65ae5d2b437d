"""Parsers of ffmpeg's log, tested on captured output (ffmpeg 5.1)."""

from __future__ import annotations

import pytest

from audio import ffmpeg

CAPTURED = """[silencedetect @ 0x557d3dce4800] silence_start: 0
[silencedetect @ 0x557d3dce4800] silence_end: 1.00005 | silence_duration: 1.00005
[silencedetect @ 0x557d3dce4800] silence_start: 3
size=N/A time=00:00:04.50 bitrate=N/A speed= 192x
video:0kB audio:388kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_ebur128_3 @ 0x557d3dce5540] Summary:

  Integrated loudness:
    I:         -22.3 LUFS
    Threshold: -32.5 LUFS

  Loudness range:
    LRA:         1.0 LU
    Threshold: -43.7 LUFS
    LRA low:   -24.4 LUFS
    LRA high:  -23.5 LUFS

  Sample peak:
    Peak:      -17.6 dBFS
[silencedetect @ 0x557d3dce4800] silence_end: 4.5 | silence_duration: 1.5
"""

SILENT = """[Parsed_ebur128_0 @ 0x1] Summary:

  Integrated loudness:
    I:         -70.0 LUFS
    Threshold:   0.0 LUFS

  True peak:
    Peak:       -inf dBFS
"""


def test_ebur128_summary():
    assert ffmpeg.parse_ebur128_summary(CAPTURED) == ffmpeg.Loudness(-22.3, -17.6)
    silent = ffmpeg.parse_ebur128_summary(SILENT)
    assert silent is not None and silent.integrated_lufs == -70.0 and silent.peak_db == float("-inf")
    assert ffmpeg.parse_ebur128_summary("no summary here") is None


def test_silences_at_both_ends_keep_a_little():
    lead, trail = ffmpeg.parse_silences(CAPTURED, 4.5, keep_s=0.25)
    assert lead == pytest.approx(0.75, abs=1e-3)
    assert trail == pytest.approx(1.25, abs=1e-3)


def test_silence_in_the_middle_is_kept():
    log = "silence_start: 1.0\nsilence_end: 2.0 | silence_duration: 1.0\n"
    assert ffmpeg.parse_silences(log, 5.0) == (0.0, 0.0)


def test_all_silence_is_not_trimmed_to_nothing():
    log = "silence_start: 0\nsilence_end: 3.0 | silence_duration: 3.0\n"
    assert ffmpeg.parse_silences(log, 3.0) == (0.0, 0.0)


def test_envelope_of_raw_pcm(tmp_path):
    import array

    raw = tmp_path / "env.s16"
    samples = array.array("h", [0] * 500 + [16384] * 500 + [-32768] * 500 + [0] * 500)
    raw.write_bytes(samples.tobytes())
    assert ffmpeg.envelope(raw, buckets=4) == [0.0, 0.5, 1.0, 0.0]
    empty = tmp_path / "empty.s16"
    empty.write_bytes(b"")
    assert ffmpeg.envelope(empty) == []
