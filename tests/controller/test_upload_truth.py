"""Uploads through the API: a playlist naming a server file is refused and stores nothing, unknown file
types are refused unread, errors show no server path, durations are the stored file's, and a file cut
short is kept with a warning that the API returns and the bulletins page shows (as data, escaped)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from audio import ffmpeg
from controller.db import session_scope
from controller.models import Bulletin, Media

from helpers import basic, tone, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "audio"))
from amr import encode_amr  # noqa: E402

ADMIN = basic("admin", "pw-admin")


def _post(client, data: bytes, name: str):
    return client.post("/api/v1/bulletins", data={"title": "Thông báo", "area": "qd/phu",
                                                  "file": (io.BytesIO(data), name)},
                       headers=ADMIN, content_type="multipart/form-data")


def _stored_nothing(app) -> bool:
    media = Path(app.config["MEDIA_DIR"])
    incoming = Path(app.config["VAR_DIR"]) / "incoming"
    files = [p for d in (media, incoming) if d.exists() for p in d.iterdir()]
    with session_scope(app) as db:
        rows = sum(db.scalar(select(func.count()).select_from(t)) for t in (Bulletin, Media))
    return not files and rows == 0


def _done(client, bid: int) -> dict:
    def check():
        b = client.get(f"/api/v1/bulletins/{bid}", headers=ADMIN).json["bulletin"]
        return b if b["status"] in ("ready", "failed") else None

    return wait_until(check, timeout=60, what="job end")


def names_durations(text: str, decoded: float, stated: float, point: str) -> bool:
    """``text`` names both durations (to a tenth of a second, with ``point`` as the decimal sign)."""
    numbers = [float(n.replace(point, ".")) for n in re.findall(rf"\d+{re.escape(point)}\d", text)]
    return any(abs(n - decoded) <= 0.1 for n in numbers) and any(abs(n - stated) <= 0.1 for n in numbers)


def _decoded_seconds(path: Path) -> float:
    proc = subprocess.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-ac", "1",
                           "-ar", "8000", "-f", "s16le", "-"], check=True, capture_output=True)
    return len(proc.stdout) / 2 / 8000


@pytest.mark.parametrize("kind", ["wav", "mp3"])
@pytest.mark.parametrize("name", ["voice.m3u8", "voice.mp3", "voice.wav", "voice.m4a", "voice", "voice.txt"])
def test_hls_playlist_naming_a_server_file_is_refused(district, client, tmp_path, kind, name):
    if kind == "wav":
        secret = tone(tmp_path / "secret.wav", 3, frequency=880, codec=["-c:a", "pcm_s16le"])
    else:
        secret = tone(tmp_path / "secret.mp3", 3, frequency=880)
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\n{secret}\n#EXT-X-ENDLIST\n".encode()
    resp = _post(client, playlist, name)
    assert resp.status_code in (415, 422), resp.json
    err = resp.json["error"]
    assert err["code"] in {"upload.unsupported_type", "audio.undecodable", "audio.unsupported_format",
                           "audio.name_mismatch"}, err
    assert err["message_vi"]
    assert str(tmp_path) not in resp.text
    assert _stored_nothing(district)


@pytest.mark.parametrize("name", ["bản tin.m3u8", "x.txt", "noextension", "x.concat"])
def test_unknown_file_types_are_refused_unread(district, client, tmp_path, name):
    wav = tone(tmp_path / "in.wav", 1, codec=["-c:a", "pcm_s16le"])  # real audio: the name alone decides
    resp = _post(client, wav.read_bytes(), name)
    assert resp.status_code == 415, resp.json
    err = resp.json["error"]
    assert err["code"] == "upload.unsupported_type"
    assert "Loại tệp" in err["message_vi"] and err["message_vi"] != err["message"]
    assert _stored_nothing(district)


def test_undecodable_upload_error_shows_no_server_path(district, client):
    resp = _post(client, b"this is a text file, not audio\n" * 20, "x.mp3")
    assert resp.status_code == 422 and resp.json["error"]["code"] == "audio.undecodable"
    text = resp.json["error"]["message"] + resp.json["error"]["message_vi"]
    for secret in (district.config["VAR_DIR"], "/incoming", "upload-", "/tmp"):
        assert secret not in text, text
    assert _stored_nothing(district)


def test_dtx_voice_note_duration_is_the_stored_files(district, client, tmp_path):
    gapped = ("aevalsrc='0.3*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*3*t))*(lt(t,3)+gte(t,11))':s=44100:d=14")
    src = encode_amr(gapped, tmp_path / "voice.amr", "nb", dtx=True)
    resp = _post(client, src.read_bytes(), "ghi-am.amr")
    assert resp.status_code == 202, resp.json
    b = _done(client, resp.json["bulletin"]["id"])
    assert b["status"] == "ready", b
    stored = Path(district.config["MEDIA_DIR"]) / f"{b['media']['sha256']}.mp3"
    out = _decoded_seconds(stored)
    assert abs(out - 14.0) <= 0.3, out
    assert abs(b["media"]["duration_ms"] / 1000 - out) <= 0.05, (b["media"]["duration_ms"], out)
    assert b["warning"] is None


def _login(client, username: str = "admin") -> None:
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"username": username, "password": "pw-" + username, "csrf_token": token})
    assert resp.status_code == 302, resp.text


def test_truncated_mp3_is_kept_with_a_warning_in_the_api_and_on_the_page(district, client, tmp_path):
    data = tone(tmp_path / "full.mp3", 6).read_bytes()
    resp = _post(client, data[: len(data) * 4 // 10], "bản tin.mp3")
    assert resp.status_code == 202, resp.json
    bid = resp.json["bulletin"]["id"]
    assert resp.json["bulletin"]["warning"] is None  # not known before it is decoded
    b = _done(client, bid)
    assert b["status"] == "ready", b
    w = b["warning"]
    assert w["code"] == "audio.truncated"
    seconds = b["media"]["duration_ms"] / 1000
    assert 1.5 < seconds < 3.0, seconds
    assert names_durations(w["message"], seconds, 6.0, "."), w
    assert names_durations(w["message_vi"], seconds, 6.0, ","), w
    listed = {x["id"]: x for x in client.get("/api/v1/bulletins", headers=ADMIN).json["bulletins"]}
    assert listed[bid]["warning"] == w

    whole = _post(client, tone(tmp_path / "whole.mp3", 2).read_bytes(), "whole.mp3").json["bulletin"]["id"]
    assert _done(client, whole)["warning"] is None

    _login(client)
    page = client.get("/bulletins")
    assert page.status_code == 200
    section = page.text[page.text.index('id="bulletin-warnings"'):]
    assert w["message_vi"] in section
    assert f'data-bulletin="{bid}"' in section and f'data-bulletin="{whole}"' not in section


def test_warning_text_on_the_page_is_data(district, client):
    """Whatever a warning says is shown escaped and never goes through gettext (no markup, no % formatting)."""
    with session_scope(district) as db:
        db.add(Bulletin(title="<b>tiêu đề</b>", kind="audio", area_id="qd/phu", status="ready", created_ms=0,
                        warning_code="audio.truncated", warning_message="cut 100%",
                        warning_message_vi="<script>alert(1)</script> 100% %(x)s"))
    _login(client)
    page = client.get("/bulletins")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "<b>tiêu đề</b>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 100% %(x)s" in page.text
    assert "&lt;b&gt;tiêu đề&lt;/b&gt;" in page.text
    # In English the English message is shown, as data too.
    client.get("/lang/en")
    assert "cut 100%" in client.get("/bulletins").text
