"""Probing with ffprobe and, when only ffmpeg exists (imageio-ffmpeg), through ffmpeg's banner."""

from __future__ import annotations

import pytest

from audio import ffmpeg, pipeline
from audio.errors import AudioError

from helpers import tone

BANNER = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'voice.m4a':
  Metadata:
    major_brand     : M4A
  Duration: 00:01:02.35, start: 0.000000, bitrate: 69 kb/s
  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 64 kb/s (default)
"""


def test_banner_parser_on_captured_output():
    info = ffmpeg.parse_ffmpeg_banner(BANNER)
    assert info.format_name == "mov,mp4,m4a,3gp,3g2,mj2"
    assert (info.codec, info.sample_rate, info.channels) == ("aac", 44100, 1)
    assert info.duration_s == pytest.approx(62.35)


def test_banner_parser_refuses_garbage():
    with pytest.raises(AudioError) as err:
        ffmpeg.parse_ffmpeg_banner("x.bin: Invalid data found when processing input\n")
    assert err.value.code == "audio.undecodable"


@pytest.fixture
def without_ffprobe(monkeypatch):
    """Behave like a machine with only imageio-ffmpeg's binary."""
    import imageio_ffmpeg

    monkeypatch.setenv("LOAXA_FFMPEG", imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("LOAXA_FFPROBE", "")
    ffmpeg.ffmpeg_exe.cache_clear()
    ffmpeg.ffprobe_exe.cache_clear()
    yield
    ffmpeg.ffmpeg_exe.cache_clear()
    ffmpeg.ffprobe_exe.cache_clear()


def test_whole_preparation_works_without_ffprobe(without_ffprobe, tmp_path):
    assert ffmpeg.ffprobe_exe() is None
    src = tone(tmp_path / "in.mp3", 2)
    info = ffmpeg.probe(src)
    assert info.codec == "mp3" and info.channels == 2
    prepared = pipeline.prepare(src, tmp_path / "store")
    assert abs(prepared.duration_ms - 2000) < 100
    assert prepared.path.name == f"{prepared.sha256}.mp3"


def test_too_long_is_refused_before_transcoding(tmp_path):
    src = tone(tmp_path / "in.mp3", 3)
    with pytest.raises(AudioError) as err:
        pipeline.prepare(src, tmp_path / "store", max_duration_s=2)
    assert err.value.code == "audio.too_long"
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
