"""A broker that comes back without its retained store: the controller notices and puts everything back.

A real Mosquitto of this test alone (persistent, so a plain restart would keep its store)
is stopped, its database file deleted and started again on the same port. The controller
must find out by itself that the broker lost the retained confs and manifests (it
compares what the broker sends on resubscription with what it published) and publish
them again well within one refresh interval; a receiver provisioned with the CLI after
the restart then gets its conf and the manifests and plays the next item.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from werkzeug.serving import make_server

from controller import create_app, db
from controller.broker import EmbeddedBroker, free_port, mosquitto_binary
from controller.db import session_scope
from controller.models import Publication, Receiver
from schedules import topics
from schedules.events import now_ms

from helpers import make_config, seed_district, tone, wait_until

pytestmark = pytest.mark.e2e
AUTH = ("admin", "pw-admin")
BIN = Path(sys.executable).parent
REFRESH_S = 600  # the production default: the restore must not wait for the periodic refresh


class _Broker:
    """What the broker holds under the conf and manifest topics, read by a fresh subscriber."""

    @staticmethod
    def held(port: int) -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        done = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, *_: c.subscribe([("loaxa/v1/conf/#", 1), ("loaxa/v1/sched/#", 1)])
        client.on_subscribe = lambda *_: threading.Timer(0.5, done.set).start()  # retained copies come first
        client.on_message = lambda _c, _u, m: got.__setitem__(m.topic, bytes(m.payload)) if m.retain else None
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            done.wait(10)
        finally:
            client.disconnect()
            client.loop_stop()
        return got


def _expected(app) -> dict[str, bytes]:
    """The newest conf and manifest the controller published for every scope and live receiver."""
    newest: dict[str, tuple[int, bytes]] = {}
    with session_scope(app) as s:
        retired = set(s.scalars(select(Receiver.id).where(Receiver.retired_ms.is_not(None))))
        for p in s.scalars(select(Publication)):
            if p.kind == "conf" and p.scope.removeprefix("rx/") in retired:
                continue
            topic = topics.conf(p.scope.removeprefix("rx/")) if p.kind == "conf" else topics.sched(p.scope)
            if p.version > newest.get(topic, (0, b""))[0]:
                newest[topic] = (p.version, p.payload.encode("utf-8"))
    return {topic: payload for topic, (_v, payload) in newest.items()}


def _provision(app, tmp_path: Path, rx_id: str, broker_url: str) -> Path:
    cfg = tmp_path / f"{rx_id}.toml"
    env = {**os.environ, "LOAXA_VAR_DIR": app.config["VAR_DIR"], "LOAXA_PUBLIC_URL": app.config["PUBLIC_URL"]}
    subprocess.run([str(BIN / "loaxa-controller"), "provision", rx_id, "--area", "qd/phu", "--name", rx_id,
                    "--mqtt-url", broker_url, "--out", str(cfg), "--state-dir", str(tmp_path / rx_id),
                    "--sink", "file"], check=True, env=env, capture_output=True)
    return cfg


def _run_receiver(cfg: Path, log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "receiver", "run", "--config", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=cfg.parent,
                                env=dict(os.environ, LOAXA_RX_RECONNECT_MAX_S="2"))


@pytest.fixture
def scene(tmp_path):
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (apt install mosquitto)")
    broker = EmbeddedBroker(tmp_path / "broker", persistent=True).start()
    port = free_port()
    app = create_app(make_config(tmp_path, MQTT_URL=broker.url, HTTP_PORT=port, MQTT_CLIENT_ID=f"ctl-rr-{port}",
                                 MANIFEST_REFRESH_S=REFRESH_S, RETAINED_AUDIT_DELAY_S=2))
    db.upgrade(app.config["DATABASE_URL"])
    seed_district(app)
    svc = app.extensions["loaxa.services"]
    svc.start()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    procs: list[subprocess.Popen] = []
    yield app, broker, procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    server.shutdown()
    server.server_close()
    thread.join(5)
    svc.stop()
    app.extensions["loaxa.engine"].dispose()
    broker.stop()


def _online(app, rx_id: str) -> bool:
    url = f"{app.config['PUBLIC_URL']}/api/v1/receivers/{rx_id}"
    return bool(requests.get(url, auth=AUTH, timeout=10).json()["receiver"]["online"])


def test_broker_restarted_without_retained_store_gets_everything_back(scene, tmp_path):
    app, broker, procs = scene
    base = app.config["PUBLIC_URL"]
    first = _provision(app, tmp_path, "phu-1", broker.url)
    procs.append(_run_receiver(first, tmp_path / "phu-1.log"))
    wait_until(lambda: _online(app, "phu-1"), timeout=30, what="phu-1 online")
    src = tone(tmp_path / "up.wav", 2, frequency=660)
    with src.open("rb") as fh:
        resp = requests.post(base + "/api/v1/bulletins", auth=AUTH, timeout=30,
                             data={"title": "Sau khi mất bộ nhớ", "area": "qd/phu"},
                             files={"file": ("tin.wav", fh, "audio/wav")})
    assert resp.status_code == 202, resp.text
    bid = resp.json()["bulletin"]["id"]
    wait_until(lambda: requests.get(f"{base}/api/v1/bulletins/{bid}", auth=AUTH, timeout=10)
               .json()["bulletin"]["status"] == "ready", timeout=60, what="transcode")

    # The CLI wrote phu-1 to the database only; the controller's fleet watch publishes its conf.
    expected = wait_until(lambda: "loaxa/v1/conf/phu-1" in (e := _expected(app)) and e, timeout=30,
                          what="phu-1's conf to be published")
    assert any("/sched/" in t for t in expected)
    wait_until(lambda: _Broker.held(broker.port) == expected, timeout=20, what="the broker to hold it all")

    # The broker dies and loses its retained store.
    svc = app.extensions["loaxa.services"]
    broker.stop()
    for stored in (tmp_path / "broker").glob("mosquitto.db*"):
        stored.unlink()
    wait_until(lambda: not svc.link.connected.is_set(), timeout=10, what="the controller to notice")
    broker.start()

    # Without anyone asking, and long before the periodic refresh, the broker holds everything again.
    wait_until(lambda: _Broker.held(broker.port) == _expected(app), timeout=REFRESH_S / 10,
               what="the controller to restore the retained confs and manifests")

    # A receiver provisioned after the restart gets its conf at once and plays the next item.
    second = _provision(app, tmp_path, "phu-2", broker.url)
    procs.append(_run_receiver(second, tmp_path / "phu-2.log"))
    wait_until(lambda: _online(app, "phu-2"), timeout=30, what=f"phu-2 online (log {tmp_path / 'phu-2.log'})")
    wait_until(lambda: "loaxa/v1/conf/phu-2" in _Broker.held(broker.port), timeout=20, what="phu-2's conf")
    start_local = datetime.fromtimestamp(now_ms() / 1000 + 10, ZoneInfo("Asia/Ho_Chi_Minh")).replace(microsecond=0)
    at = start_local.strftime("%Y-%m-%d %H:%M:%S")
    resp = requests.post(base + "/api/v1/programme/items", auth=AUTH, timeout=10,
                         json={"bulletin_id": bid, "area": "qd/phu", "start": at})
    assert resp.status_code == 201, resp.text
    item = resp.json()["item"]
    recorded = f"{item['occurrences'][0].replace('/', '_')}-{item['start_ms']}"
    for rx_id in ("phu-1", "phu-2"):
        sidecar = tmp_path / rx_id / "sink" / f"{recorded}.json"
        meta = wait_until(lambda s=sidecar: s.exists() and (m := json.loads(s.read_text())).get("closed_ms") and m,
                          timeout=60, what=f"{rx_id} to play the item (log {tmp_path / (rx_id + '.log')})")
        assert abs(meta["first_sample_ms"] - item["start_ms"]) < 500, (rx_id, meta)
