"""Text bulletins: spoken offline by espeak-ng for real; gTTS against a local stand-in of Google's endpoint,
and the fallback when that endpoint hangs; the preview stores nothing."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select

from audio import ffmpeg
from controller.db import session_scope
from controller.models import Bulletin, Media

from helpers import basic, make_config, seed_district, tone, wait_until

ADMIN = basic("admin", "pw-admin")
OP_PHU = basic("op-phu", "pw-op-phu")
TEXT = "UBND xã Quảng Phú thông báo: ngày 22/11/2026 lúc 17h30 họp tại nhà văn hóa thôn 3. Liên hệ 0912345678."


class StandIn:
    """A local stand-in of Google Translate's TTS endpoint (batchexecute, rpc jQ1olc)."""

    def __init__(self, mp3: bytes, hang: bool = False):
        self.mp3, self.hang, self.texts = mp3, hang, []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                rpc = json.loads(urllib.parse.parse_qs(body)["f.req"][0])
                outer.texts.append(json.loads(rpc[0][0][1])[0])
                if outer.hang:
                    outer.release.wait(30)
                    return
                audio = base64.b64encode(outer.mp3).decode()
                rpc_out = [["wrb.fr", "jQ1olc", json.dumps([audio]), None, None, None, "generic"]]
                payload = ")]}'\n\n" + json.dumps(rpc_out, separators=(",", ":")) + "\n"
                data = payload.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/_/TranslateWebserverUi/data/batchexecute"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _app(tmp_path, **extra):
    from controller import create_app, db

    app = create_app(make_config(tmp_path, **{"TTS_ENGINES": "espeak", **extra}))
    db.upgrade(app.config["DATABASE_URL"])
    seed_district(app)
    return app


@pytest.fixture
def make_app(tmp_path):
    apps = []

    def make(**extra):
        app = _app(tmp_path / f"app{len(apps)}", **extra)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["loaxa.services"].stop()
        app.extensions["loaxa.engine"].dispose()


@pytest.fixture
def stand_in(tmp_path):
    servers = []

    def start(hang: bool = False) -> StandIn:
        mp3 = tone(tmp_path / f"google{len(servers)}.mp3", 2, codec=["-ac", "1", "-c:a", "libmp3lame"]).read_bytes()
        server = StandIn(mp3, hang)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _wait_done(client, bid, headers=ADMIN):
    def done():
        b = client.get(f"/api/v1/bulletins/{bid}", headers=headers).json["bulletin"]
        return b if b["status"] in ("ready", "failed") else None

    return wait_until(done, timeout=60, what="text bulletin")


def test_text_bulletin_spoken_offline_by_espeak(make_app):
    app = make_app()
    client = app.test_client()
    resp = client.post("/api/v1/bulletins/tts", json={"title": "Họp thôn", "area": "qd/phu", "text": TEXT},
                       headers=OP_PHU)
    assert resp.status_code == 202, resp.json
    assert resp.json["bulletin"]["status"] == "queued" and resp.json["bulletin"]["kind"] == "text"
    b = _wait_done(client, resp.json["bulletin"]["id"], OP_PHU)
    assert b["status"] == "ready", b
    assert b["tts"]["engine"] == "espeak" and b["tts"]["voice"] == "vi"
    assert b["progress"] == 100
    path = Path(app.config["MEDIA_DIR"]) / f"{b['media']['sha256']}.mp3"
    measured = ffmpeg.measure_output(path)
    assert abs(measured.integrated_lufs + 16) <= 1.0 and measured.peak_db <= -1.2
    assert b["media"]["duration_ms"] > 5000
    assert len(b["media"]["peaks"]) > 100
    assert not any((Path(app.config["VAR_DIR"]) / "incoming").iterdir())


def test_gtts_through_a_local_stand_in(make_app, stand_in):
    google = stand_in()
    app = make_app(TTS_ENGINES="gtts,espeak", TTS_GTTS_URL=google.url)
    client = app.test_client()
    resp = client.post("/api/v1/bulletins/tts", json={"title": "Tin", "area": "qd/phu", "text": TEXT}, headers=ADMIN)
    b = _wait_done(client, resp.json["bulletin"]["id"])
    assert b["status"] == "ready", b
    assert b["tts"]["engine"] == "gtts"
    spoken = " ".join(google.texts)
    assert "ủy ban nhân dân" in spoken and "mười bảy giờ ba mươi" in spoken
    assert "không chín một hai" in spoken


def test_gtts_hanging_falls_back_to_espeak(make_app, stand_in):
    google = stand_in(hang=True)
    app = make_app(TTS_ENGINES="gtts,espeak", TTS_GTTS_URL=google.url, TTS_GTTS_TIMEOUT_S=0.5)
    client = app.test_client()
    resp = client.post("/api/v1/bulletins/tts", json={"title": "Tin", "area": "qd/phu", "text": "Xin chào bà con."},
                       headers=ADMIN)
    b = _wait_done(client, resp.json["bulletin"]["id"])
    assert b["status"] == "ready", b
    assert b["tts"]["engine"] == "espeak"
    assert google.texts  # it was asked, and did not answer in time


def test_preview_renders_without_storing(make_app):
    app = make_app()
    client = app.test_client()
    resp = client.post("/api/v1/bulletins/tts/preview",
                       json={"area": "qd/phu", "text": "Thông báo lịch cắt điện.", "voice": "vi-vn-x-south"},
                       headers=OP_PHU)
    assert resp.status_code == 200, resp.data[:300]
    assert resp.mimetype == "audio/mpeg"
    assert resp.headers["X-Loaxa-TTS-Engine"] == "espeak"
    assert resp.headers["X-Loaxa-TTS-Voice"] == "vi-vn-x-south"
    assert resp.data[:3] == b"ID3" or resp.data[:2] in (b"\xff\xfb", b"\xff\xf3")
    media = Path(app.config["MEDIA_DIR"])
    assert not media.exists() or not any(media.iterdir())
    assert not any((Path(app.config["VAR_DIR"]) / "incoming").iterdir())
    with session_scope(app) as db:
        assert db.scalar(select(func.count()).select_from(Bulletin)) == 0
        assert db.scalar(select(func.count()).select_from(Media)) == 0


def test_repeat_with_gaps(make_app):
    app = make_app()
    client = app.test_client()
    one = client.post("/api/v1/bulletins/tts/preview", json={"area": "qd/phu", "text": "Mời họp."}, headers=ADMIN)
    three = client.post("/api/v1/bulletins/tts/preview",
                        json={"area": "qd/phu", "text": "Mời họp.", "repeat": 3, "repeat_gap_s": 2},
                        headers=ADMIN)
    d1, d3 = int(one.headers["X-Loaxa-Duration-Ms"]), int(three.headers["X-Loaxa-Duration-Ms"])
    assert abs(d3 - (3 * d1 + 4000)) < 800, (d1, d3)


@pytest.mark.parametrize(("body", "code"), [
    ({"title": "x", "area": "qd/phu", "text": ""}, "tts.empty"),
    ({"title": "x", "area": "qd/phu", "text": "a", "engine": "festival"}, "tts.bad_engine"),
    ({"title": "x", "area": "qd/phu", "text": "a", "voice": "../../etc/passwd"}, "tts.bad_voice"),
    ({"title": "x", "area": "qd/phu", "text": "a", "repeat": 50}, "tts.bad_repeat"),
    ({"title": "x", "area": "qd/phu", "text": "a", "intro": "../x"}, "tts.bad_jingle"),
    ({"title": "", "area": "qd/phu", "text": "a"}, "bulletin.bad_title"),
    ({"title": "x", "area": "qd/phu", "text": "a" * 20001}, "tts.too_long"),
])
def test_bad_text_requests(make_app, body, code):
    client = make_app().test_client()
    resp = client.post("/api/v1/bulletins/tts", json=body, headers=ADMIN)
    assert resp.status_code == 400 and resp.json["error"]["code"] == code
    assert resp.json["error"]["message_vi"]


def test_text_refusals_by_role_and_area(make_app):
    client = make_app().test_client()
    body = {"title": "x", "area": "qd/phu", "text": "Xin chào."}
    for path in ("/api/v1/bulletins/tts", "/api/v1/bulletins/tts/preview"):
        assert client.post(path, json=body).status_code == 401
        assert client.post(path, json=body, headers=basic("viewer", "pw-viewer")).status_code == 403
        resp = client.post(path, json=body, headers=basic("op-an", "pw-op-an"))
        assert resp.status_code == 404 and resp.json["error"]["code"] == "area.not_found"
    assert client.post("/api/v1/bulletins/tts", data="nope", headers=ADMIN).json["error"]["code"] == \
        "request.bad_json"


def test_engines_listed(make_app):
    client = make_app().test_client()
    resp = client.get("/api/v1/tts/engines", headers=basic("viewer", "pw-viewer"))
    assert resp.json["engines"] == ["espeak"]
    assert "vi-vn-x-central" in resp.json["voices"]
