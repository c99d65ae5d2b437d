"""Relay now, end to end: a studio's MP3 stream on Icecast 2 reaches a real receiver's speaker and stops.

A stand-in for the district studio (ffmpeg sending a 440 Hz tone in real time to an Icecast
mount) is relayed with ``POST /api/v1/relays`` at priority level; the receiver plays the stream
(heard: the pitch in its file sink) until the relay is stopped, when the new manifest withdraws
it and the receiver ends it (``withdrawn``).
"""

from __future__ import annotations

import array
import json
import subprocess

import pytest
import requests

from audio.ffmpeg import ffmpeg_exe
from controller.icecast import EmbeddedIcecast, icecast_binary
from schedules.events import now_ms

from helpers import wait_until

pytestmark = pytest.mark.e2e
AUTH = ("admin", "pw-admin")


@pytest.fixture
def studio(tmp_path):
    """Icecast on loopback with a 440 Hz MP3 stream on /studio.mp3, sent in real time."""
    if icecast_binary() is None:
        pytest.skip("icecast2 is not installed (apt install icecast2; .ci/run installs it)")
    ice = EmbeddedIcecast(tmp_path / "icecast").start()
    source = subprocess.Popen([ffmpeg_exe(), "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                               "sine=frequency=440:sample_rate=44100:duration=120", "-ac", "1", "-c:a", "libmp3lame",
                               "-b:a", "48k", "-content_type", "audio/mpeg", "-f", "mp3",
                               ice.source_url("/studio.mp3")], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "/studio.mp3" in ice.active_mounts(), timeout=15, what="the studio mount on Icecast")
        yield ice
    finally:
        source.kill()
        source.wait()
        ice.stop()


def _api(app, path):
    return requests.get(app.config["PUBLIC_URL"] + path, auth=AUTH, timeout=10).json()


def test_a_relay_through_icecast_is_heard_and_stops(live_app, receiver, studio):
    live_app.config["ALERT_ALLOW_PRIVATE_STREAMS"] = True  # the studio is on loopback here
    _proc, sink_dir, log = receiver
    base = live_app.config["PUBLIC_URL"]
    wait_until(lambda: _api(live_app, "/api/v1/receivers/phu-1")["receiver"]["online"], timeout=30,
               what=f"receiver online (log: {log})")
    resp = requests.post(base + "/api/v1/relays", auth=AUTH, timeout=10, json={
        "areas": ["qd/phu"], "url": studio.listen_url("/studio.mp3"), "level": "priority", "duration_s": 120,
        "name": "Đài huyện"})
    assert resp.status_code == 201, resp.text
    relay = resp.json()["relay"]

    def started():
        evs = _api(live_app, "/api/v1/receivers/phu-1")["receiver"]["events"]
        return [e for e in evs if e["type"] == "playback.started" and e.get("priority") == "priority"]

    (event,) = wait_until(started, timeout=30, what=f"the relay to start on the receiver (log: {log})")
    assert event["planned_start_ms"] == relay["start_ms"]
    sidecar = sink_dir / f"{event['item_id'].replace('/', '_')}-{relay['start_ms']}.json"
    pcm_path = sidecar.with_suffix(".pcm")
    wait_until(lambda: pcm_path.exists() and pcm_path.stat().st_size > 4 * 44100 * 2,
               timeout=30, what="four seconds of the stream in the sink")
    stopped_ms = now_ms()
    assert requests.post(f"{base}/api/v1/relays/{relay['item_id']}/stop", auth=AUTH, timeout=10).status_code == 200

    def finished():
        evs = _api(live_app, "/api/v1/receivers/phu-1")["receiver"]["events"]
        return [e for e in evs if e["type"] == "playback.finished" and e["item_id"] == event["item_id"]]

    (done,) = wait_until(finished, timeout=20, what="the withdrawn relay to end")
    assert done["end_reason"] == "withdrawn"
    meta = json.loads(sidecar.read_text())
    assert meta["closed_ms"] - stopped_ms < 3000, (meta["closed_ms"] - stopped_ms)
    # Heard: the studio's 440 Hz, not silence.
    pcm = array.array("h")
    pcm.frombytes(pcm_path.read_bytes())
    second = pcm[-2 * 44100: -44100]
    crossings = sum(1 for a, b in zip(second, second[1:], strict=False) if (a < 0) != (b < 0))
    assert 840 < crossings < 920, f"expected ~880 zero crossings of 440 Hz, got {crossings}"
