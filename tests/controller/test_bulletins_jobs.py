"""The job state of an upload: queued → processing (percent) → ready, or failed with a code and reasons;
a crashing ffmpeg fails the bulletin, not the pool, and leaves no temporary files."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

from audio import ffmpeg
from controller.db import session_scope
from controller.models import Bulletin
from controller.services import catalogue

from helpers import basic, tone, wait_until

ADMIN = basic("admin", "pw-admin")


def _post(client, data: bytes, name: str):
    return client.post("/api/v1/bulletins", data={"title": "Tin", "area": "qd/phu", "file": (io.BytesIO(data), name)},
                       headers=ADMIN, content_type="multipart/form-data")


def _done(client, bid):
    def check():
        b = client.get(f"/api/v1/bulletins/{bid}", headers=ADMIN).json["bulletin"]
        return b if b["status"] in ("ready", "failed") else None

    return wait_until(check, timeout=60, what="job end")


def _leftovers(app) -> list[Path]:
    dirs = [Path(app.config["VAR_DIR"]) / "incoming", Path(app.config["MEDIA_DIR"])]
    return [p for d in dirs if d.exists() for p in d.iterdir() if p.name.startswith((".", "upload-", "tts-"))]


def test_progress_is_recorded_while_processing(district, client, tmp_path, monkeypatch):
    monkeypatch.setattr(catalogue, "PROGRESS_EVERY_S", 0.0)
    src = tone(tmp_path / "long.mp3", 240, codec=["-ac", "1", "-ar", "16000", "-c:a", "libmp3lame", "-b:a", "8k"])
    resp = _post(client, src.read_bytes(), "long.mp3")
    assert resp.status_code == 202 and resp.json["bulletin"]["status"] == "queued"
    bid = resp.json["bulletin"]["id"]
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            with session_scope(district) as db:
                b = db.get(Bulletin, bid)
                seen.append((b.status, b.progress or 0))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        b = _done(client, bid)
    finally:
        stop.set()
        watcher.join()
    assert b["status"] == "ready" and b["progress"] == 100, b
    during = [p for s, p in seen if s == "processing"]
    assert any(0 < p < 100 for p in during), seen[:50]
    assert during == sorted(during)
    assert b["source"]["loudness_lufs"] is not None and b["media"]["loudness_lufs"] is not None


def test_failure_is_reported_with_code_and_reasons(district, client, tmp_path):
    silent = tmp_path / "silent.wav"
    subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=d=2", str(silent)],
                   check=True)
    resp = _post(client, silent.read_bytes(), "silent.wav")
    assert resp.status_code == 202
    b = _done(client, resp.json["bulletin"]["id"])
    assert b["status"] == "failed"
    assert b["error"]["code"] == "audio.silent"
    assert b["error"]["message"] and b["error"]["message_vi"] != b["error"]["message"]
    assert b["media"] is None
    assert not _leftovers(district)


def test_name_that_lies_is_refused_at_once(district, client, tmp_path):
    wav = tone(tmp_path / "x.wav", 1, codec=["-c:a", "pcm_s16le"])
    resp = _post(client, wav.read_bytes(), "ghi-am.mp3")
    assert resp.status_code == 422 and resp.json["error"]["code"] == "audio.name_mismatch"
    assert not _leftovers(district)


def test_ffmpeg_crash_fails_the_bulletin_not_the_pool(district, client, tmp_path, monkeypatch):
    real = ffmpeg.ffmpeg_exe()
    crashing = tmp_path / "ffmpeg"
    crashing.write_text(f'#!/bin/sh\ncase "$*" in *-progress*) kill -SEGV $$ ;; esac\nexec {real} "$@"\n')
    crashing.chmod(crashing.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("LOAXA_FFMPEG", str(crashing))
    monkeypatch.setenv("LOAXA_FFPROBE", ffmpeg.ffprobe_exe() or "")
    ffmpeg.ffmpeg_exe.cache_clear()
    ffmpeg.ffprobe_exe.cache_clear()
    data = tone(tmp_path / "in.mp3", 2).read_bytes()
    try:
        b = _done(client, _post(client, data, "in.mp3").json["bulletin"]["id"])
        assert b["status"] == "failed" and b["error"]["code"] == "audio.ffmpeg_crashed", b
        assert not _leftovers(district)
    finally:
        monkeypatch.delenv("LOAXA_FFMPEG")
        monkeypatch.delenv("LOAXA_FFPROBE")
        ffmpeg.ffmpeg_exe.cache_clear()
        ffmpeg.ffprobe_exe.cache_clear()
    assert os.environ.get("LOAXA_FFMPEG") is None
    b = _done(client, _post(client, data, "in.mp3").json["bulletin"]["id"])
    assert b["status"] == "ready"
