"""The normalising pipeline: every accepted format comes out at the target loudness, bad inputs are refused.

Fixtures are generated here with ffmpeg; loudness is checked by an independent
ebur128 pass (true peak) on the stored file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from amr import encode_amr

from audio import ffmpeg, pipeline
from audio.errors import AudioError

# Speech-like: two modulated partials, one low and one in the presence band.
SIGNAL = ("aevalsrc=0.3*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*3*t))+0.2*sin(2*PI*1300*t)*(0.5+0.5*sin(2*PI*5*t))"
          ":s=44100:d={d}")
VIDEO = "testsrc=size=64x64:rate=5:duration={d}"

FORMATS = {
    "mp3": ["-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k"],
    "wav": ["-ac", "2", "-c:a", "pcm_s16le"],
    "m4a": ["-ac", "1", "-c:a", "aac", "-b:a", "64k"],
    "aac": ["-ac", "1", "-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "3gp": ["-ac", "1", "-ar", "16000", "-c:a", "aac", "-b:a", "24k", "-f", "3gp"],
    "ogg": ["-ac", "2", "-c:a", "libvorbis"],
    "opus": ["-ac", "1", "-c:a", "libopus", "-b:a", "32k"],
    "flac": ["-ac", "2", "-c:a", "flac"],
    "wma": ["-ac", "2", "-c:a", "wmav2", "-b:a", "64k"],
}
VIDEOS = {
    "mp4": ["-c:v", "mpeg4", "-c:a", "aac", "-shortest"],
    "mov": ["-c:v", "mpeg4", "-c:a", "aac", "-shortest"],
    "mkv": ["-c:v", "mpeg4", "-c:a", "libvorbis", "-shortest"],
}


def make(path: Path, args: list[str], seconds: float = 4, gain_db: float = 0, video: bool = False) -> Path:
    """Generate a fixture with ffmpeg."""
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", VIDEO.format(d=seconds)]
    cmd += ["-f", "lavfi", "-i", SIGNAL.format(d=seconds), "-af", f"volume={gain_db}dB", *args, str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def assert_on_target(prepared: pipeline.Prepared, target: float = -16.0, tp: float = -1.5) -> None:
    """Independent measurement: integrated loudness within 1 LU, true peak under the ceiling."""
    measured = ffmpeg.measure_output(prepared.path)
    assert abs(measured.integrated_lufs - target) <= 1.0, measured
    assert measured.peak_db <= tp + 0.3, measured
    info = ffmpeg.probe(prepared.path)
    assert info.channels == 1


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_every_audio_format_comes_out_on_target(tmp_path, ext):
    src = make(tmp_path / f"in.{ext}", FORMATS[ext], gain_db=-8)
    prepared = pipeline.prepare(src, tmp_path / "store", name=src.name)
    assert prepared.path.name == f"{prepared.sha256}.mp3"
    assert abs(prepared.duration_ms - 4000) < 150
    assert_on_target(prepared)
    assert prepared.loudness_in_lufs is not None and prepared.loudness_in_lufs < -20
    assert len(prepared.peaks) > 100 and max(prepared.peaks) <= 1.0
    assert prepared.warning is None  # whole files are not "cut short"


@pytest.mark.parametrize("kind", ["nb", "wb"])
def test_amr_voice_notes(tmp_path, kind):
    src = encode_amr(SIGNAL.format(d=4), tmp_path / "voice.amr", kind)
    assert ffmpeg.probe(src).codec == f"amr_{kind}"
    prepared = pipeline.prepare(src, tmp_path / "store", name=src.name)
    assert abs(prepared.duration_ms - 4000) < 150
    assert_on_target(prepared)
    assert prepared.warning is None


@pytest.mark.parametrize("ext", sorted(VIDEOS))
def test_audio_track_of_video(tmp_path, ext):
    src = make(tmp_path / f"clip.{ext}", VIDEOS[ext], video=True)
    prepared = pipeline.prepare(src, tmp_path / "store", name=src.name)
    assert_on_target(prepared)
    assert prepared.warning is None


@pytest.mark.parametrize("gain_db", [-40, 30], ids=["very-quiet", "clipping"])
def test_quiet_and_clipping_recordings(tmp_path, gain_db):
    src = make(tmp_path / "in.wav", ["-ac", "2", "-c:a", "pcm_s16le"], gain_db=gain_db)
    assert_on_target(pipeline.prepare(src, tmp_path / "store"))


def test_speech_from_espeak_on_target(tmp_path):
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "vi", "-w", str(wav),
                    "Ủy ban nhân dân xã thông báo lịch tiêm phòng cho gia súc, gia cầm vào sáng thứ hai tuần sau."],
                   check=True, capture_output=True)
    assert_on_target(pipeline.prepare(wav, tmp_path / "store"))


def test_other_targets_and_opus(tmp_path):
    src = make(tmp_path / "in.mp3", FORMATS["mp3"])
    settings = pipeline.Settings(target_lufs=-20, true_peak_db=-3, encoding=ffmpeg.Encoding("opus", "32k"))
    prepared = pipeline.prepare(src, tmp_path / "store", settings=settings)
    assert prepared.path.suffix == ".opus" and prepared.format == "opus"
    assert ffmpeg.probe(prepared.path).codec == "opus"
    assert_on_target(prepared, target=-20, tp=-3)


def test_silence_is_trimmed_at_both_ends(tmp_path):
    src = tmp_path / "padded.wav"
    subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono:d=2",
                    "-f", "lavfi", "-i", SIGNAL.format(d=3), "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono:d=3",
                    "-filter_complex", "[0][1][2]concat=n=3:v=0:a=1", str(src)], check=True)
    kept = pipeline.prepare(src, tmp_path / "a")
    trimmed = pipeline.prepare(src, tmp_path / "b", settings=pipeline.Settings(trim_silence=True))
    assert abs(kept.duration_ms - 8000) < 150
    assert 3000 <= trimmed.duration_ms <= 3800
    assert_on_target(trimmed)


def test_progress_is_reported_and_reaches_the_end(tmp_path):
    src = make(tmp_path / "in.mp3", FORMATS["mp3"], seconds=20)
    seen: list[float] = []
    pipeline.prepare(src, tmp_path / "store", on_progress=seen.append)
    assert seen and seen == sorted(seen)
    assert seen[-1] == 1.0 and len(seen) > 3 and all(0 <= f <= 1 for f in seen)


def test_same_output_is_stored_once(tmp_path):
    src = make(tmp_path / "in.flac", FORMATS["flac"])
    a = pipeline.prepare(src, tmp_path / "store")
    b = pipeline.prepare(src, tmp_path / "store")
    assert a.sha256 == b.sha256
    assert [p.name for p in (tmp_path / "store").iterdir()] == [a.path.name]


def _bad(tmp_path: Path, kind: str) -> tuple[Path, str | None]:
    if kind == "truncated":
        full = make(tmp_path / "full.m4a", FORMATS["m4a"], seconds=5)
        data = full.read_bytes()
        path = tmp_path / "cut.m4a"
        path.write_bytes(data[: len(data) // 3])
        return path, path.name
    if kind == "garbage":
        path = tmp_path / "x.mp3"
        path.write_bytes(b"not audio at all\n" * 100)
        return path, path.name
    if kind == "silent":
        path = tmp_path / "silent.wav"
        subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=d=3",
                        str(path)], check=True)
        return path, path.name
    if kind == "mismatch":
        path = make(tmp_path / "really.wav", FORMATS["wav"], seconds=1)
        return path, "voice.mp3"
    if kind == "zero":
        path = tmp_path / "zero.wav"
        subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=d=0.0001",
                        "-t", "0", str(path)], check=True)
        return path, path.name
    if kind == "video-only":
        path = tmp_path / "v.mp4"
        subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", VIDEO.format(d=1),
                        "-c:v", "mpeg4", str(path)], check=True)
        return path, path.name
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "codes"), [
    ("truncated", {"audio.undecodable"}),
    ("garbage", {"audio.undecodable"}),
    ("silent", {"audio.silent"}),
    ("mismatch", {"audio.name_mismatch"}),
    ("zero", {"audio.zero_duration", "audio.undecodable", "audio.no_stream"}),
    ("video-only", {"audio.no_stream"}),
])
def test_bad_inputs_get_their_code_and_leave_the_store_untouched(tmp_path, kind, codes):
    path, name = _bad(tmp_path, kind)
    store = tmp_path / "store"
    with pytest.raises(AudioError) as err:
        pipeline.prepare(path, store, name=name)
    assert err.value.code in codes, (err.value.code, err.value.message)
    assert err.value.message_vi
    assert not store.exists() or not any(store.iterdir())


def test_a_file_claiming_hours_is_stopped_by_the_limit(tmp_path):
    """A WAV header claiming hours, with seconds of data behind it, or hours of cheap data: the limit stops both."""
    src = make(tmp_path / "long.flac", ["-ac", "1", "-c:a", "flac"], seconds=30, gain_db=-10)
    store = tmp_path / "store"
    with pytest.raises(AudioError) as err:
        pipeline.prepare(src, store, settings=pipeline.Settings(max_duration_s=10))
    assert err.value.code == "audio.too_long"
    # Headers that lie: a raw ADTS stream has no duration header; the decode stops at the limit.
    adts = make(tmp_path / "long.aac", FORMATS["aac"], seconds=30)
    with pytest.raises(AudioError) as err:
        pipeline.prepare(adts, store, settings=pipeline.Settings(max_duration_s=10))
    assert err.value.code == "audio.too_long"
    assert not store.exists() or not any(store.iterdir())
