"""POST /api/v1/bulletins: what is accepted, what is refused, and that refusals store nothing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.db import session_scope
from controller.models import Bulletin, Media

from helpers import basic, tone, wait_until

ADMIN = basic("admin", "pw-admin")
OP_PHU = basic("op-phu", "pw-op-phu")


def _store_is_empty(app) -> bool:
    media = Path(app.config["MEDIA_DIR"])
    incoming = Path(app.config["VAR_DIR"]) / "incoming"
    files = [p for d in (media, incoming) if d.exists() for p in d.iterdir()]
    with session_scope(app) as db:
        rows = sum(db.scalar(select(func.count()).select_from(t)) for t in (Bulletin, Media))
    return not files and rows == 0


def _post(client, data: bytes, name: str = "x.mp3", headers=ADMIN, **form):
    fields = {"title": "Thông báo", "area": "qd/phu", **form, "file": (io.BytesIO(data), name)}
    resp = client.post("/api/v1/bulletins", data=fields, headers=headers, content_type="multipart/form-data")
    return resp


def test_upload_transcodes_to_mono_mp3_named_by_sha256(district, client, tmp_path):
    # Stereo WAV under 500 KB: werkzeug's test client leaks larger multipart bodies it spools to disk.
    src = tone(tmp_path / "in.wav", 2.5, codec=["-ac", "2", "-c:a", "pcm_s16le"])
    resp = _post(client, src.read_bytes(), "bản tin.wav", headers=OP_PHU)
    assert resp.status_code == 202, resp.json
    bid = resp.json["bulletin"]["id"]

    def ready():
        b = client.get(f"/api/v1/bulletins/{bid}", headers=OP_PHU).json["bulletin"]
        return b if b["status"] in ("ready", "failed") else None

    b = wait_until(ready, what="transcode")
    assert b["status"] == "ready", b
    sha = b["media"]["sha256"]
    path = Path(district.config["MEDIA_DIR"]) / f"{sha}.mp3"
    from audio import ffmpeg, pipeline

    assert pipeline.sha256_file(path) == sha
    info = ffmpeg.probe(path)
    assert (info.codec, info.channels, info.sample_rate) == ("mp3", 1, 44100)
    assert abs(b["media"]["duration_ms"] - 2500) < 100


def test_same_content_is_stored_once(district, client, tmp_path):
    data = tone(tmp_path / "in.mp3", 2).read_bytes()
    ids = [_post(client, data).json["bulletin"]["id"] for _ in range(2)]
    shas = [wait_until(lambda i=i: client.get(f"/api/v1/bulletins/{i}", headers=ADMIN).json["bulletin"]["media"])
            ["sha256"] for i in ids]
    assert shas[0] == shas[1]
    assert len(list(Path(district.config["MEDIA_DIR"]).glob("*.mp3"))) == 1


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"", 422, "audio.empty"),
        (b"this is a text file, not audio\n" * 20, 422, "audio.undecodable"),
        # An image: ffmpeg would read it, but only audio and video demuxers may (clips without audio: below).
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 500, 422, "audio.undecodable"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(district, client, payload, status, code):
    resp = _post(client, payload)
    assert resp.status_code == status
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["message_vi"]
    assert _store_is_empty(district)


def test_video_without_audio_is_refused(district, client, tmp_path):
    import subprocess

    from audio.ffmpeg import ffmpeg_exe

    video = tmp_path / "silent.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=1",
                    "-c:v", "mpeg4", str(video)], check=True)
    resp = _post(client, video.read_bytes(), "clip.mp4")
    assert resp.status_code == 422 and resp.json["error"]["code"] == "audio.no_stream"
    assert _store_is_empty(district)


def test_upload_over_the_limit_is_refused(tmp_path):
    from controller import create_app, db

    from helpers import make_config, seed_district

    app = create_app(make_config(tmp_path, MAX_UPLOAD_BYTES=10_000))
    db.upgrade(app.config["DATABASE_URL"])
    seed_district(app)
    try:
        resp = _post(app.test_client(), b"\xff\xfb" * 20_000)
        assert resp.status_code == 413
        assert resp.json["error"]["code"] == "upload.too_large"
        assert _store_is_empty(app)
    finally:
        app.extensions["loaxa.services"].stop()
        app.extensions["loaxa.engine"].dispose()


def test_missing_file_and_title(district, client):
    resp = client.post("/api/v1/bulletins", data={"title": "x"}, headers=ADMIN)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "upload.missing_file"
    resp = _post(client, b"abc", title="")
    assert resp.status_code == 400 and resp.json["error"]["code"] == "bulletin.bad_title"
    assert _store_is_empty(district)


def test_refusals_by_role_and_area(district, client, tmp_path):
    data = tone(tmp_path / "in.mp3", 1).read_bytes()
    assert _post(client, data, headers={}).status_code == 401
    assert _post(client, data, headers=basic("admin", "wrong")).status_code == 401
    assert _post(client, data, headers=basic("viewer", "pw-viewer")).status_code == 403
    # An operator of another commune cannot upload for Quảng Phú, nor learn that it exists.
    resp = _post(client, data, headers=basic("op-an", "pw-op-an"))
    assert resp.status_code == 404 and resp.json["error"]["code"] == "area.not_found"
    assert _store_is_empty(district)


def test_filename_with_path_tricks_is_harmless(district, client, tmp_path):
    data = tone(tmp_path / "in.mp3", 1).read_bytes()
    resp = _post(client, data, name="../../etc/passwd\x00" + "a" * 300 + ".mp3")
    assert resp.status_code == 202
    assert not (tmp_path / "etc").exists()
