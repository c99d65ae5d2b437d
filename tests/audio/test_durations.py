"""Durations tell the truth: silence an AMR voice note sent as DTX frames keeps its length, the duration
stored is the one of the encoded file, and a file cut short is kept with a warning naming both durations."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from amr import encode_amr, nb_frame_types

from audio import ffmpeg, pipeline

# Speech-like tone for 3 s, 8 s of digital silence, tone for 3 s.
GAPPED = ("aevalsrc='0.3*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*3*t))*(lt(t,3)+gte(t,11))'"
          ":s=44100:d=14")
SPEECH_NO_DATA = 15


def decoded_seconds(path: Path) -> float:
    """Independent measurement: decode to raw PCM and count the samples."""
    proc = subprocess.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-ac", "1",
                           "-ar", "8000", "-f", "s16le", "-"], check=True, capture_output=True)
    return len(proc.stdout) / 2 / 8000


@pytest.fixture
def dtx_note(tmp_path) -> Path:
    src = encode_amr(GAPPED, tmp_path / "voice.amr", "nb", dtx=True)
    types = nb_frame_types(src)
    assert types.get(SPEECH_NO_DATA, 0) > 200, types  # the silence really went out as DTX frames
    return src


def test_amr_dtx_silence_keeps_its_length(tmp_path, dtx_note):
    prepared = pipeline.prepare(dtx_note, tmp_path / "store", name="voice.amr")
    out = decoded_seconds(prepared.path)
    assert abs(out - 14.0) <= 0.3, out
    assert abs(prepared.duration_ms / 1000 - out) <= 0.05, (prepared.duration_ms, out)
    assert prepared.warning is None  # DTX frames are logged as decode errors, but they are silence


def test_amr_without_dtx_is_unchanged(tmp_path):
    src = encode_amr(GAPPED, tmp_path / "voice.amr", "nb")
    prepared = pipeline.prepare(src, tmp_path / "store", name="voice.amr")
    assert abs(decoded_seconds(prepared.path) - 14.0) <= 0.3
    assert abs(prepared.duration_ms - 14000) <= 300


def names_durations(text: str, decoded: float, stated: float, point: str) -> bool:
    """``text`` names both durations (to a tenth of a second, with ``point`` as the decimal sign)."""
    numbers = [float(n.replace(point, ".")) for n in re.findall(rf"\d+{re.escape(point)}\d", text)]
    return any(abs(n - decoded) <= 0.1 for n in numbers) and any(abs(n - stated) <= 0.1 for n in numbers)


def _mp3(tmp_path: Path, seconds: float, *extra: str) -> Path:
    path = tmp_path / "full.mp3"
    subprocess.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate=44100:duration={seconds}", "-ac", "2", "-c:a", "libmp3lame",
                    "-b:a", "128k", *extra, str(path)], check=True, capture_output=True)
    return path


def test_truncated_mp3_is_kept_with_a_warning(tmp_path):
    data = _mp3(tmp_path, 6).read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) * 4 // 10])
    prepared = pipeline.prepare(cut, tmp_path / "store", name=cut.name)
    out = decoded_seconds(prepared.path)
    assert 1.5 < out < 3.0, out  # the decodable part
    assert abs(prepared.duration_ms / 1000 - out) <= 0.05
    w = prepared.warning
    assert w is not None and w.code == "audio.truncated"
    assert names_durations(w.message, prepared.duration_ms / 1000, 6.0, "."), w.message
    assert names_durations(w.message_vi, prepared.duration_ms / 1000, 6.0, ","), w.message_vi


def test_whole_mp3_has_no_warning(tmp_path):
    prepared = pipeline.prepare(_mp3(tmp_path, 6), tmp_path / "store", name="full.mp3")
    assert prepared.warning is None
    assert abs(prepared.duration_ms - 6000) <= 50


def test_mp3_without_header_broken_at_its_end_is_warned(tmp_path):
    """No Xing header states a duration (ffmpeg estimates it); the decoder's errors at the end tell."""
    data = _mp3(tmp_path, 6, "-write_xing", "0").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) * 4 // 10] + bytes(range(256)) * 12)  # a download that broke off
    assert ffmpeg.probe(cut).duration_estimated
    prepared = pipeline.prepare(cut, tmp_path / "store", name=cut.name)
    assert prepared.warning is not None and prepared.warning.code == "audio.truncated"


def test_end_errors_are_counted_at_the_end_only():
    clock = "[Parsed_ashowinfo_7 @ 0x55d1] n:{n} pts:{pts} pts_time:{t} fmt:s16 channels:1 chlayout:mono rate:1000"
    log = "\n".join([
        "[mp3float @ 0x3] Header missing",  # before any clock: could be anywhere
        clock.format(n=0, pts=0, t=0),
        "[amrnb @ 0x2] Corrupt bitstream",  # in the middle: silence frames, or a glitch
        "Error while decoding stream #0:0: Invalid data found when processing input",
        clock.format(n=18, pts=9000, t=9),
        "[mp3float @ 0x3] Header missing",
        "Error while decoding stream #0:0: Invalid data found when processing input",
        clock.format(n=19, pts=9500, t=9.5),
    ])
    assert ffmpeg.count_end_errors(log, 10.0) == 2
    assert ffmpeg.count_end_errors(log, 20.0) == 0
