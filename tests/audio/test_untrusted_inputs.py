"""Uploads are untrusted: ffmpeg reads them with the accepted demuxers and local protocols only, so a
playlist naming a file of the server is never followed, and no error shows a path of the server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from audio import ffmpeg, pipeline
from audio.errors import AudioError, strip_paths

from helpers import tone

REFUSED = {"audio.undecodable", "audio.unsupported_format"}


def _secret(tmp_path: Path, kind: str) -> Path:
    """Audio that lives on the server and must never come out of an upload."""
    if kind == "wav":
        return tone(tmp_path / "secret.wav", 3, frequency=880, codec=["-c:a", "pcm_s16le"])
    return tone(tmp_path / "secret.mp3", 3, frequency=880)


def _hls(path: Path, target: str) -> Path:
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\n{target}\n#EXT-X-ENDLIST\n")
    return path


@pytest.mark.parametrize("kind", ["wav", "mp3"])
@pytest.mark.parametrize("name", [None, "voice.mp3", "voice.m4a"])
def test_hls_playlist_naming_a_server_file_is_refused(tmp_path, kind, name):
    secret = _secret(tmp_path, kind)
    playlist = _hls(tmp_path / "upload-1", str(secret))
    store = tmp_path / "store"
    with pytest.raises(AudioError) as err:
        pipeline.prepare(playlist, store, name=name)
    assert err.value.code in REFUSED | {"audio.name_mismatch"}, (err.value.code, err.value.message)
    assert err.value.message_vi
    assert str(tmp_path) not in err.value.message
    assert not store.exists() or not any(store.iterdir())


@pytest.mark.parametrize("target", ["file://{secret}", "{secret}"])
def test_probe_refuses_playlists_and_concat_lists(tmp_path, target):
    secret = _secret(tmp_path, "mp3")
    playlist = _hls(tmp_path / "upload-2", target.format(secret=secret))
    concat = tmp_path / "upload-3"
    concat.write_text(f"ffconcat version 1.0\nfile '{secret.name}'\n")  # a relative name: concat's "safe" path
    for path in (playlist, concat):
        with pytest.raises(AudioError) as err:
            ffmpeg.probe(path)
        assert err.value.code in REFUSED, err.value.message


def test_concat_list_is_not_transcoded(tmp_path):
    secret = _secret(tmp_path, "wav")
    concat = tmp_path / "upload-4"
    concat.write_text(f"ffconcat version 1.0\nfile '{secret.name}'\n")
    with pytest.raises(AudioError) as err:
        pipeline.prepare(concat, tmp_path / "store")
    assert err.value.code in REFUSED
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_decodes_name_their_demuxer_and_local_protocols(tmp_path, monkeypatch):
    """Pass 1 and pass 2 force the demuxer the probe found, with the file and pipe protocols only."""
    seen: list[list[str]] = []

    def fake_run(args, **_kw):
        seen.append(args)
        return 0, "Integrated loudness:\n    I:  -20.0 LUFS\n  Sample peak:\n    Peak:  -3.0 dBFS", 1.0

    monkeypatch.setattr(ffmpeg, "run_with_progress", fake_run)
    src = tmp_path / "in.mp3"
    ffmpeg.measure(src, highpass_hz=120, max_duration_s=60, input_format="mp3")
    ffmpeg.normalise_encode(src, tmp_path / "out.mp3", gain_db=1, limit_db=-2, highpass_hz=120,
                            encoding=ffmpeg.Encoding(), max_duration_s=60, input_format="mov")
    for args, fmt in zip(seen, ("mp3", "mov"), strict=True):
        before_input = args[:args.index("-i")]
        assert before_input[before_input.index("-protocol_whitelist") + 1] == "file,pipe"
        assert before_input[before_input.index("-f") + 1] == fmt
        assert set(before_input[before_input.index("-format_whitelist") + 1].split(",")) == set(ffmpeg.DEMUXERS)
    with pytest.raises(AudioError) as err:
        ffmpeg.measure(src, highpass_hz=120, max_duration_s=60, input_format="hls")
    assert err.value.code == "audio.unsupported_format"


def test_only_accepted_demuxers_pass_validation():
    assert ffmpeg.demuxer_of("mov,mp4,m4a,3gp,3g2,mj2") == "mov"
    assert ffmpeg.demuxer_of("matroska,webm") == "matroska"
    for other in ("hls", "concat", "png_pipe", "image2", "lavfi", "tee", "w64"):
        assert ffmpeg.demuxer_of(other) is None


@pytest.mark.parametrize("name", ["voice.m3u8", "voice.txt", "voice", "voice.mp3.m3u8", "voice.concat", ".mp3/x"])
def test_unknown_extensions_are_refused(name):
    with pytest.raises(AudioError) as err:
        pipeline.check_extension(name)
    assert err.value.code == "upload.unsupported_type"
    assert err.value.message_vi and err.value.message_vi != err.value.message


@pytest.mark.parametrize("name", ["Bản tin.MP3", "ghi-am.webm", "voice.amr", "clip.3gp", "x.m4a", "c:\\dir\\a.wav"])
def test_known_extensions_pass(name):
    pipeline.check_extension(name)


def test_undecodable_error_names_no_server_path(tmp_path):
    path = tmp_path / "incoming" / "upload-abc123"
    path.parent.mkdir()
    path.write_bytes(b"this is a text file, not audio\n" * 20)
    with pytest.raises(AudioError) as err:
        pipeline.validate(path, max_duration_s=60)
    assert err.value.code == "audio.undecodable"
    for text in (err.value.message, err.value.message_vi, str(err.value)):
        assert str(tmp_path) not in text and "upload-abc123" not in text and "/incoming" not in text, text
    assert "Invalid data" in err.value.message  # what ffmpeg said stays


def test_assembly_decode_errors_name_no_server_path(tmp_path):
    piece = tmp_path / "tts-x" / "piece-0001.wav"
    piece.parent.mkdir()
    piece.write_bytes(b"RIFF not really")
    with pytest.raises(AudioError) as err:
        ffmpeg.decode_pcm(piece)
    assert str(tmp_path) not in err.value.message and "piece-0001" not in err.value.message, err.value.message


def test_transcode_failure_names_no_server_path(tmp_path):
    src = tone(tmp_path / "in.wav", 1, codec=["-c:a", "pcm_s16le"])
    with pytest.raises(AudioError) as err:  # an output directory that does not exist
        ffmpeg.normalise_encode(src, tmp_path / "missing" / "out.mp3", gain_db=0, limit_db=-2, highpass_hz=120,
                                encoding=ffmpeg.Encoding(), max_duration_s=60, input_format="wav")
    assert err.value.code == "audio.transcode_failed"
    assert str(tmp_path) not in err.value.message, err.value.message


def test_strip_paths():
    assert strip_paths("/tmp/a/upload-1: Invalid data found") == "<path>: Invalid data found"
    assert strip_paths("Opening 'file:///etc/passwd' for reading") == "Opening '<path>' for reading"
    assert strip_paths("[Errno 2] No such file or directory: '/var/x y'") == \
        "[Errno 2] No such file or directory: '<path> y'"
    for kept in ("128 kb/s", "N/A", "exit 1", "1/2 of it", "a / b"):
        assert strip_paths(kept) == kept
    assert "/srv" not in AudioError("x", "cannot run /srv/bin/piper", "Lỗi /srv/x").message


def test_playlist_named_as_upload_without_ffprobe(tmp_path, monkeypatch):
    """The banner parser (imageio-ffmpeg, no ffprobe) is held to the same demuxers."""
    import imageio_ffmpeg

    monkeypatch.setenv("LOAXA_FFMPEG", imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("LOAXA_FFPROBE", "")
    ffmpeg.ffmpeg_exe.cache_clear()
    ffmpeg.ffprobe_exe.cache_clear()
    try:
        secret = _secret(tmp_path, "mp3")
        playlist = _hls(tmp_path / "upload-5", str(secret))
        with pytest.raises(AudioError) as err:
            pipeline.prepare(playlist, tmp_path / "store")
        assert err.value.code in REFUSED
        assert str(tmp_path) not in err.value.message
    finally:
        ffmpeg.ffmpeg_exe.cache_clear()
        ffmpeg.ffprobe_exe.cache_clear()


def test_generated_fixtures_are_really_playlists(tmp_path):
    """Without the restrictions ffmpeg does follow these playlists (so the tests above test something)."""
    secret = _secret(tmp_path, "mp3")
    playlist = _hls(tmp_path / "upload-6", str(secret))
    proc = subprocess.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(playlist), "-f", "null", "-"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Input #0, hls" in proc.stderr, proc.stderr[-500:]
