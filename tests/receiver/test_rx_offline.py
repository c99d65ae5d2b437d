"""Offline: the broker stops before a session; the receiver plays from its cache on time; its events reach
the controller's database after the broker returns, none lost and none duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.broker import EmbeddedBroker
from controller.db import session_scope
from controller.models import Event, Receiver
from controller.services.telemetry import Telemetry
from schedules import topics

from rx_support import (
    Media,
    MediaServer,
    content_bytes,
    make_item,
    mosquitto_binary,
    now_ms,
    signed_conf,
    signed_manifest,
    toml_text,
    unique,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


def _persistent_broker(workdir: Path) -> EmbeddedBroker:
    """A Mosquitto of this test alone, persistent so queued messages survive its restart."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    return EmbeddedBroker(workdir, persistent=True)


class _Ingest:
    """The controller's side: a persistent subscriber feeding Telemetry, counting what it was handed."""

    def __init__(self, port: int, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("ctl-"), clean_session=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(f"{topics.PREFIX}/rx/+/events", 1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append(bytes(msg.payload))
        self.telemetry.handle(msg.topic, bytes(msg.payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.e2e
def test_offline_session_plays_from_cache_and_reports_after(
    tmp_path: Path, district: Any, media_server: MediaServer, sine_mp3: Media, signing_key: Any, public_key_text: str
) -> None:
    app = district
    rx = unique("off-")
    with session_scope(app) as db:
        db.add(Receiver(id=rx, area_id="qd/phu", name=rx, token_hash=unique("h"), created_ms=0))
    media_server.add(sine_mp3)
    broker = _persistent_broker(tmp_path)
    broker.start()
    ingest = _Ingest(broker.port, Telemetry(app))
    proc: subprocess.Popen[bytes] | None = None
    try:
        assert ingest.subscribed.wait(10)
        setup = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("setup-"))
        setup.connect("127.0.0.1", broker.port)
        setup.loop_start()
        start = now_ms() + 12_000
        item = make_item("offline-news", start, 2000, sine_mp3.ref)
        scope = f"rx/{rx}"
        for topic, payload in ((topics.conf(rx), signed_conf(signing_key, rx, 1, [])),
                               (topics.sched(scope), signed_manifest(signing_key, scope, 1, [item]))):
            setup.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        setup.loop_stop()
        setup.disconnect()
        config = tmp_path / "rx.toml"
        config.write_text(toml_text({
            "rx_id": rx, "mqtt_url": f"mqtt://127.0.0.1:{broker.port}", "controller_public_key": public_key_text,
            "media_base_url": media_server.url, "token": media_server.token, "state_dir": str(tmp_path / "state"),
            "sink": "file", "sink_dir": str(tmp_path / "sink"),
        }))
        with (tmp_path / "rx.log").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "receiver", "run", "--config", str(config)], cwd=REPO,
                                    # a short backoff ceiling: the broker is back within seconds
                                    env=dict(os.environ, PYTHONUNBUFFERED="1", LOAXA_RX_RECONNECT_MAX_S="4"),
                                    stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
        wait_until(lambda: list((tmp_path / "state" / "media").glob(f"{sine_mp3.ref.sha256}.*")), timeout=30)
        wait_until(lambda: len(ingest.payloads) >= 2, timeout=20)  # conf + manifest accepted arrived
        time.sleep(0.5)
        broker.stop()  # the network is gone before the session
        sidecar = tmp_path / "sink" / f"offline-news-{start}.json"
        wait_until(lambda: sidecar.exists() and json.loads(sidecar.read_text())["closed_ms"], timeout=30)
        played = json.loads(sidecar.read_text())
        assert abs(played["first_sample_ms"] - start) < 500 and content_bytes(played) == 2 * 44100 * 2
        broker.start()  # the broker returns (with the controller's persistent session)

        def ingested() -> list[Event] | None:
            with session_scope(app) as db:
                rows = db.query(Event).filter(Event.rx_id == rx).all()
                types = [r.type for r in rows]
                return rows if "playback.finished" in types else None

        wait_until(ingested, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        proc = None
        time.sleep(1.0)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        ingest.close()
        broker.stop()
    with session_scope(app) as db:
        rows = db.query(Event).filter(Event.rx_id == rx).order_by(Event.ts_ms).all()
        stored = [(r.id, r.type, r.item_id) for r in rows]
    with ingest.lock:
        ids_seen = [json.loads(p)["id"] for p in ingest.payloads]
    types = [t for _, t, _ in stored]
    assert types.count("playback.started") == 1 and types.count("playback.finished") == 1
    assert sorted({i for i, _, _ in stored}) == sorted(set(ids_seen))  # every event that arrived, stored once
    assert len(stored) == len({i for i, _, _ in stored})
    # Nothing left behind in the receiver's outbox: every event was acknowledged by the broker.
    from receiver.outbox import Outbox

    box = Outbox(tmp_path / "state" / "outbox.db")
    try:
        assert box.count() == 0
    finally:
        box.close()
