"""One bulletin end to end, across processes, through real parts.

upload (HTTP) → transcode (ffmpeg) → schedule at a local time → signed retained
manifest (Mosquitto) → a real ``loaxa-receiver`` process verifies it, downloads
the media with its token, plays it at the scheduled second into the file sink →
events through its outbox → controller ingests → API and HTML page show it.
"""

from __future__ import annotations

import array
import json
import re
import signal
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests

from schedules import signing, topics
from schedules.events import now_ms
from schedules.manifest import Item, Manifest, MediaRef

from helpers import tone, wait_until

pytestmark = pytest.mark.e2e
AUTH = ("admin", "pw-admin")


@pytest.fixture
def controller(live_app):
    """The live controller of tests/conftest.py: HTTP on a free port, services on the test broker."""
    return live_app


def _api(app, path):
    return requests.get(app.config["PUBLIC_URL"] + path, auth=AUTH, timeout=10).json()


def test_one_bulletin_end_to_end(controller, receiver, tmp_path, mqtt_url):
    proc, sink_dir, log = receiver
    base = controller.config["PUBLIC_URL"]
    wait_until(lambda: _api(controller, "/api/v1/receivers/phu-1")["receiver"]["online"], timeout=30,
               what=f"receiver online (log: {log})")

    src = tone(tmp_path / "upload.m4a", 3, frequency=880, codec=["-ac", "2", "-c:a", "aac", "-b:a", "96k"])
    with open(src, "rb") as fh:
        resp = requests.post(base + "/api/v1/bulletins", auth=AUTH, timeout=30,
                             data={"title": "Thông báo lịch tiêm chủng", "area": "qd/phu"},
                             files={"file": ("bản tin.m4a", fh, "audio/mp4")})
    assert resp.status_code == 202, resp.text
    bid = resp.json()["bulletin"]["id"]
    bulletin = wait_until(lambda: (b := _api(controller, f"/api/v1/bulletins/{bid}")["bulletin"])["status"] == "ready"
                          and b, what="transcode")
    duration_ms = bulletin["media"]["duration_ms"]

    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    start_local = datetime.fromtimestamp(now_ms() / 1000 + 7, tz).replace(microsecond=0)
    resp = requests.post(base + "/api/v1/programme/items", auth=AUTH, timeout=10,
                         json={"bulletin_id": bid, "area": "qd/phu",
                               "start": start_local.strftime("%Y-%m-%d %H:%M:%S")})
    assert resp.status_code == 201, resp.text
    item = resp.json()["item"]
    start_ms = int(start_local.timestamp() * 1000)
    assert item["start_ms"] == start_ms

    occurrence = item["occurrences"][0]
    recorded = f"{occurrence.replace('/', '_')}-{start_ms}"  # the sink keeps ids file-name safe
    sidecar = sink_dir / f"{recorded}.json"
    meta = wait_until(lambda: sidecar.exists() and (m := json.loads(sidecar.read_text())).get("closed_ms") and m,
                      timeout=40, what=f"the file sink to record the item (receiver log: {log})")

    # Played at the scheduled second, by the receiver's own clock.
    assert abs(meta["first_sample_ms"] - start_ms) < 200, meta
    # The bytes decode to the bulletin: its duration, and its 880 Hz tone.
    pcm = array.array("h")
    pcm.frombytes((sink_dir / f"{recorded}.pcm").read_bytes())
    assert (meta["sample_rate"], meta["channels"]) == (44100, 1)
    assert abs(len(pcm) / 44100 * 1000 - duration_ms) < 100
    middle = pcm[44100: 2 * 44100]
    crossings = sum(1 for a, b in zip(middle, middle[1:], strict=False) if (a < 0) != (b < 0))
    assert 1700 < crossings < 1820, f"expected ~1760 zero crossings of 880 Hz, got {crossings}"

    # The controller ingested started/finished once each; the API and the page show it.
    detail = wait_until(lambda: (r := _api(controller, "/api/v1/receivers/phu-1")["receiver"])["played"] and r,
                        what="playback.finished ingested")
    assert detail["online"] is True
    assert [p["item_id"] for p in detail["played"]] == [item["occurrences"][0]]
    kinds = [e["type"] for e in detail["events"] if e.get("item_id") == item["occurrences"][0]]
    assert sorted(kinds) == ["playback.finished", "playback.started"]

    page = requests.Session()
    login = page.get(base + "/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
    page.post(base + "/login", data={"username": "admin", "password": "pw-admin", "csrf_token": csrf}, timeout=10)
    html = page.get(base + "/receivers/phu-1", timeout=10).text
    assert "Trực tuyến" in html and "Phát xong" in html and item["occurrences"][0] in html
    overview = page.get(base + "/", timeout=10).text
    assert '<b id="online-count">1</b>' in overview and "1/1 cụm" in overview

    # A forged manifest (another key) is refused, reported, and the good programme kept.
    forged_key = signing.generate_private_key()
    media = MediaRef(sha256="d" * 64, path="/media/" + "d" * 64 + ".mp3", bytes=1, duration_ms=1000)
    forged = Manifest("area/qd/phu", 999, now_ms(), now_ms(), now_ms() + 1000,
                      [Item("pi-evil", "giả mạo", now_ms() + 5000, 1000, "emergency", media)])
    _publish_raw(mqtt_url, topics.sched("area/qd/phu"), signing.sign(forged_key, forged.to_body()))
    refused = wait_until(lambda: [e for e in _api(controller, "/api/v1/receivers/phu-1")["receiver"]["events"]
                                  if e["type"] == "manifest.refused"], what="manifest.refused event")
    assert refused[0].get("code") == "sig.invalid"
    recent = _api(controller, "/api/v1/receivers/phu-1")["receiver"]["events"]
    faults = [e for e in recent if e["type"] == "fault.raised"]
    assert any(f.get("fault") == "signature_refused" for f in faults)
    assert proc.poll() is None, "the receiver survived the forged manifest"

    # A clean stop says goodbye: the controller sees the receiver offline.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    wait_until(lambda: not _api(controller, "/api/v1/receivers/phu-1")["receiver"]["online"], what="offline")


def _publish_raw(url: str, topic: str, payload: bytes) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from controller.mqtt import parse_url

    host, port, *_ = parse_url(url)
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_item_approved_in_the_ui_reaches_the_receiver_within_5_seconds(controller, receiver, tmp_path):
    proc, _sink, log = receiver
    base = controller.config["PUBLIC_URL"]
    wait_until(lambda: _api(controller, "/api/v1/receivers/phu-1")["receiver"]["online"], timeout=30,
               what=f"receiver online (log: {log})")
    src = tone(tmp_path / "b.mp3", 2)
    with open(src, "rb") as fh:
        bid = requests.post(base + "/api/v1/bulletins", auth=("op-phu", "pw-op-phu"), timeout=30,
                            data={"title": "Lịch cắt điện", "area": "qd/phu"},
                            files={"file": ("b.mp3", fh, "audio/mpeg")}).json()["bulletin"]["id"]
    wait_until(lambda: _api(controller, f"/api/v1/bulletins/{bid}")["bulletin"]["status"] == "ready", what="ready")
    draft = requests.post(base + "/api/v1/programme/items", auth=("op-phu", "pw-op-phu"), timeout=10,
                          json={"bulletin_id": bid, "area": "qd/phu", "session": "evening", "mode": "daily"}).json()
    item_id = draft["item"]["id"]
    assert draft["item"]["status"] == "draft"

    page = requests.Session()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get(base + "/login", timeout=10).text).group(1)
    page.post(base + "/login", data={"username": "admin", "password": "pw-admin", "csrf_token": csrf}, timeout=10)
    html = page.get(base + "/programme?area=qd/phu", timeout=10).text
    assert f'data-item="{item_id}"' in html and "Duyệt" in html
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    clicked = now_ms()
    done = page.post(f"{base}/programme/items/{item_id}/approve", data={"csrf_token": csrf, "area": "qd/phu"},
                     timeout=10)
    assert "Đã duyệt" in done.text

    def accepted():
        evs = _api(controller, "/api/v1/receivers/phu-1")["receiver"]["events"]
        return [e for e in evs if e["type"] == "manifest.accepted" and e["scope"] == "area/qd/phu"
                and e["items"] > 0 and e["ts"] >= clicked]

    event = wait_until(accepted, timeout=15, what="the approved item in the receiver's manifest")[0]
    assert event["ts"] - clicked < 5000, f"took {event['ts'] - clicked} ms"
    # Without the CSRF token the same form is refused and nothing changes.
    refused = page.post(f"{base}/programme/items/{item_id}/reject", data={"area": "qd/phu"}, timeout=10)
    assert refused.status_code == 400
    assert _api(controller, f"/api/v1/programme/items/{item_id}")["item"]["status"] == "approved"


def test_test_tone_button_plays_on_the_real_receiver(controller, receiver):
    """The cluster page's "Phát âm thử" sends a signed command; the receiver plays 1000 Hz for 5 s and says so."""
    _proc, sink_dir, log = receiver
    base = controller.config["PUBLIC_URL"]
    wait_until(lambda: _api(controller, "/api/v1/receivers/phu-1")["receiver"]["online"], timeout=30,
               what=f"receiver online (log: {log})")
    page = requests.Session()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get(base + "/login", timeout=10).text).group(1)
    page.post(base + "/login", data={"username": "op-phu", "password": "pw-op-phu", "csrf_token": csrf}, timeout=10)
    html = page.get(base + "/clusters/phu-1", timeout=10).text
    assert 'value="test_tone"' in html
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    sent = page.post(base + "/clusters/phu-1/command", data={"action": "test_tone", "csrf_token": csrf}, timeout=10)
    assert "phát âm thử" in sent.text

    def finished():
        evs = _api(controller, "/api/v1/receivers/phu-1")["receiver"]["events"]
        return [e for e in evs if e["type"] == "test_tone.finished"]

    (event,) = wait_until(finished, timeout=30, what=f"test_tone.finished from the receiver (log: {log})")
    assert event["end_reason"] == "complete" and abs(event["played_ms"] - 5000) <= 50
    (pcm_file,) = sink_dir.glob("test-tone-*.pcm")
    pcm = array.array("h", pcm_file.read_bytes())
    middle = pcm[44100 * 2:44100 * 3]  # one second from the middle, mono 44.1 kHz
    crossings = sum(1 for a, b in zip(middle, middle[1:], strict=False) if (a < 0) != (b < 0))
    assert 1900 <= crossings <= 2100, crossings  # 1000 Hz
