"""While the controller has lost the broker, no screen claims to know who is online.

A Mosquitto of the test's own is stopped under a running controller: the receivers API,
the cluster table and its summary, the map points and every page say the state is
unknown since the moment the link went down, and go back to what telemetry says once the
broker is back.
"""

from __future__ import annotations

import pytest

from controller import create_app, db
from controller.broker import EmbeddedBroker, mosquitto_binary
from controller.db import session_scope
from controller.models import Receiver
from schedules.events import now_ms

from helpers import basic, make_config, seed_district, wait_until

ADMIN = basic("admin", "pw-admin")


@pytest.fixture
def scene(tmp_path):
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (apt install mosquitto)")
    broker = EmbeddedBroker(tmp_path / "broker").start()
    app = create_app(make_config(tmp_path, MQTT_URL=broker.url, MQTT_CLIENT_ID=f"ctl-lost-{tmp_path.name}"))
    db.upgrade(app.config["DATABASE_URL"])
    seed_district(app)
    with session_scope(app) as s:
        for n in range(3):  # heard from just now: online by every rule
            s.add(Receiver(id=f"phu-{n}", area_id="qd/phu", name=f"Phú {n}", token_hash=f"h{n}", created_ms=0,
                           online=True, last_seen_ms=now_ms() + 3600_000))
    svc = app.extensions["loaxa.services"]
    svc.start()
    assert svc.link.connected.wait(10)
    yield app, broker
    svc.stop()
    app.extensions["loaxa.engine"].dispose()
    broker.stop()


def _login(client):
    client.post("/login", data={"username": "admin", "password": "pw-admin"})


def test_every_status_view_says_unknown_since_the_broker_was_lost(scene):
    app, broker = scene
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    listed = client.get("/api/v1/receivers", headers=ADMIN).json["receivers"]
    assert [(r["online"], r["state"], r["unknown_since_ms"]) for r in listed] == [(True, "online", None)] * 3
    assert client.get("/api/v1/clusters", headers=ADMIN).json["summary"]["ok"] == 3

    before = now_ms()
    broker.stop()
    svc = app.extensions["loaxa.services"]
    wait_until(lambda: not svc.link.connected.is_set(), timeout=10, what="the controller to notice")
    lost = svc.broker_down_since()
    assert lost is not None and lost >= before - 1000

    listed = client.get("/api/v1/receivers", headers=ADMIN).json["receivers"]
    assert [(r["online"], r["state"], r["unknown_since_ms"]) for r in listed] == [(None, "unknown", lost)] * 3
    one = client.get("/api/v1/receivers/phu-1", headers=ADMIN).json["receiver"]
    assert one["online"] is None and one["state"] == "unknown"
    table = client.get("/api/v1/clusters", headers=ADMIN).json
    assert table["summary"] == {"total": 3, "ok": 0, "fault": 0, "offline": 0, "unknown": 3,
                                "unknown_since_ms": lost}
    assert {r["status"] for r in table["clusters"]} == {"unknown"}
    # Filtering for "ok" finds nothing that is known to be ok; "unknown" finds them all.
    assert client.get("/api/v1/clusters?status=ok", headers=ADMIN).json["total"] == 0
    assert client.get("/api/v1/clusters?status=unknown", headers=ADMIN).json["total"] == 3

    _login(client)
    for path in ("/", "/clusters", "/receivers/phu-1", "/faults", "/reports"):
        page = client.get(path)
        assert page.status_code == 200, path
        html = page.get_data(as_text=True)
        assert 'id="broker-lost"' in html and "không rõ" in html, path
    cluster_page = client.get("/clusters").get_data(as_text=True)
    assert "Hoạt động tốt</td>" not in cluster_page

    broker.start()  # the same port
    wait_until(lambda: svc.link.connected.is_set(), timeout=30, what="the controller to reconnect")
    assert svc.broker_down_since() is None
    listed = client.get("/api/v1/receivers", headers=ADMIN).json["receivers"]
    assert [r["state"] for r in listed] == ["online"] * 3
    assert 'id="broker-lost"' not in client.get("/").get_data(as_text=True)


def test_a_process_without_mqtt_services_shows_what_the_database_says(district, client):
    """The CLI and unit tests run no link: nothing is 'lost', the last known state is shown."""
    with session_scope(district) as s:
        s.add(Receiver(id="x-1", area_id="qd/phu", name="X", token_hash="h", created_ms=0, online=False))
    one = client.get("/api/v1/receivers/x-1", headers=ADMIN).json["receiver"]
    assert (one["online"], one["state"], one["unknown_since_ms"]) == (False, "offline", None)
