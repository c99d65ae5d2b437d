"""The receiver fleet through the API: register, bundle, move, retire — and every refusal.

The last test runs a real Mosquitto with a password file and the deploy ACL: a bundle's login
connects, a retired box's login is refused after the controller reloads the broker.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller import auth, create_app, db
from controller.broker import EmbeddedBroker, mosquitto_binary
from controller.db import session_scope
from controller.models import AuditEntry, MissedPlay, Receiver
from controller.services import asrun, brokerauth, health

from helpers import basic, count_rows, make_config, seed_district, wait_until

ROOT = Path(__file__).resolve().parents[2]
MANAGER = basic("man-qd", "pw-man-qd")
OP_PHU = basic("op-phu", "pw-op-phu")
ADMIN = basic("admin", "pw-admin")

ON_BOTH_DATABASES = True


def _bundle(resp) -> dict[str, bytes]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(resp.data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_register_place_and_move_a_receiver(prog, client):
    made = client.post("/api/v1/receivers", headers=MANAGER,
                       json={"id": "phu-thon-3", "area": "qd/phu", "name": "Thôn 3", "lat": 16.58, "lon": 107.5})
    assert made.status_code == 201, made.json
    assert made.json["receiver"]["online"] is False
    assert made.json["receiver"]["lat"] == 16.58 and made.json["receiver"]["retired_ms"] is None
    moved = client.patch("/api/v1/receivers/phu-thon-3", headers=MANAGER, json={"area": "qd/an", "lat": None})
    assert moved.status_code == 200 and moved.json["receiver"]["area"] == "qd/an"
    assert moved.json["receiver"]["lat"] is None
    with session_scope(prog) as s:
        actions = [a.action for a in s.query(AuditEntry).order_by(AuditEntry.id)]
    assert actions[-2:] == ["create_receiver", "update_receiver"]


@pytest.mark.parametrize("body, status, code", [
    ({"id": "Phú 1", "area": "qd/phu"}, 400, "receiver.bad_id"),
    ({"id": "a/b", "area": "qd/phu"}, 400, "receiver.bad_id"),
    ({"id": "x", "area": "qd/phu"}, 400, "receiver.bad_id"),
    ({"id": "phu-9", "area": "qd/phu", "lat": 91}, 400, "receiver.bad_lat"),
    ({"id": "phu-9", "area": "qd/phu", "lon": "đông"}, 400, "receiver.bad_lon"),
    ({"id": "phu-9", "area": "qd/phu", "name": "x" * 201}, 400, "receiver.bad_name"),
    ({"id": "phu-9", "area": "nowhere"}, 404, "area.not_found"),
    ({"id": "phu-1", "area": "qd/phu"}, 409, "receiver.exists"),
])
def test_bad_registrations_are_refused_and_store_nothing(prog, client, body, status, code):
    before = count_rows(prog, Receiver), count_rows(prog, AuditEntry)
    resp = client.post("/api/v1/receivers", headers=MANAGER, json=body)
    assert (resp.status_code, resp.json["error"]["code"]) == (status, code)
    assert resp.json["error"]["message_vi"]
    assert (count_rows(prog, Receiver), count_rows(prog, AuditEntry)) == before


def test_roles_and_scopes_refuse_fleet_changes(prog, client):
    before = count_rows(prog, AuditEntry)
    # An operator manages no boxes, even in its own commune.
    assert client.post("/api/v1/receivers", headers=OP_PHU, json={"id": "phu-9", "area": "qd/phu"}).status_code == 403
    assert client.post("/api/v1/receivers/phu-1/bundle", headers=OP_PHU).status_code == 403
    assert client.post("/api/v1/receivers/phu-1/retire", headers=OP_PHU).status_code == 403
    assert client.patch("/api/v1/receivers/phu-1", headers=OP_PHU, json={"name": "x"}).status_code == 403
    assert client.post("/api/v1/receivers/phu-1/retire").status_code == 401
    assert count_rows(prog, AuditEntry) == before
    # A manager of another commune sees none of this one's boxes (404, not 403: ids are not revealed).
    client.post("/api/v1/users", headers=ADMIN, json={"username": "man-an", "password": "pw-man-an",
                                                      "role": "manager", "area": "qd/an"})
    before = count_rows(prog, AuditEntry)
    man_an = basic("man-an", "pw-man-an")
    assert client.post("/api/v1/receivers/phu-1/bundle", headers=man_an).status_code == 404
    assert client.post("/api/v1/receivers/phu-1/retire", headers=man_an).status_code == 404
    assert client.patch("/api/v1/receivers/phu-1", headers=man_an, json={"name": "x"}).status_code == 404
    assert client.post("/api/v1/receivers", headers=man_an, json={"id": "phu-9", "area": "qd/phu"}).status_code == 404
    # ...nor moves its own box into another commune.
    assert client.patch("/api/v1/receivers/an-1", headers=man_an, json={"area": "qd/phu"}).status_code == 404
    assert count_rows(prog, AuditEntry) == before
    with session_scope(prog) as s:
        assert s.get(Receiver, "phu-1").retired_ms is None and s.get(Receiver, "an-1").area_id == "qd/an"


def test_bundle_issues_new_credentials_that_replace_the_old(prog, client, tmp_path):
    prog.config["MQTT_PASSWORD_FILE"] = str(tmp_path / "passwd")
    prog.config["RECEIVER_MQTT_URL"] = "mqtt://ctl:secret@broker.example:1883"
    files = _bundle(client.post("/api/v1/receivers/phu-1/bundle", headers=MANAGER, json={"sink": "file"}))
    assert sorted(files) == ["loaxa-phu-1/controller.pub", "loaxa-phu-1/mosquitto-passwd",
                             "loaxa-phu-1/receiver.toml"]
    conf = tomllib.loads(files["loaxa-phu-1/receiver.toml"].decode())
    # The controller's own broker login never goes into a box's bundle.
    assert conf["mqtt_url"] == "mqtt://broker.example:1883" and conf["sink"] == "file"
    assert conf["controller_public_key"] == files["loaxa-phu-1/controller.pub"].decode().strip()
    lines = brokerauth.PasswordFile(tmp_path / "passwd").entries()
    assert brokerauth.check_password(lines["phu-1"], conf["mqtt_password"])
    media = prog.test_client()
    with prog.test_request_context(headers={"Authorization": f"Bearer {conf['token']}"}):
        assert auth.receiver_from_bearer().id == "phu-1"
    # A second bundle is a re-install: the first token and password stop working.
    again = tomllib.loads(_bundle(client.post("/api/v1/receivers/phu-1/bundle", headers=MANAGER))
                          ["loaxa-phu-1/receiver.toml"].decode())
    assert again["sink"] == "alsa" and again["token"] != conf["token"]
    assert not brokerauth.check_password(brokerauth.PasswordFile(tmp_path / "passwd").entries()["phu-1"],
                                         conf["mqtt_password"])
    with prog.test_request_context(headers={"Authorization": f"Bearer {conf['token']}"}):
        assert auth.receiver_from_bearer() is None
    assert media.get("/media/" + "a" * 64 + ".mp3", headers={"Authorization": f"Bearer {conf['token']}"}
                     ).status_code in (401, 403)
    bad = client.post("/api/v1/receivers/phu-1/bundle", headers=MANAGER, json={"sink": "hdmi"})
    assert (bad.status_code, bad.json["error"]["code"]) == (400, "receiver.bad_sink")


def test_retired_receiver_leaves_the_fleet_but_keeps_its_history(prog, client, tmp_path):
    prog.config["MQTT_PASSWORD_FILE"] = str(tmp_path / "passwd")
    # No broker known (no services here, no URL configured): no bundle that could not connect.
    refused = client.post("/api/v1/receivers/phu-1/bundle", headers=MANAGER)
    assert (refused.status_code, refused.json["error"]["code"]) == (503, "mqtt.unavailable")
    assert not (tmp_path / "passwd").exists()
    prog.config["RECEIVER_MQTT_URL"] = "mqtts://broker.example:8883"
    conf = tomllib.loads(_bundle(client.post("/api/v1/receivers/phu-1/bundle", headers=MANAGER))
                         ["loaxa-phu-1/receiver.toml"].decode())
    with session_scope(prog) as s:
        before = health.summary(s, {"qd", "qd/phu", "qd/an"}, 0)["total"]
    resp = client.post("/api/v1/receivers/phu-1/retire", headers=MANAGER)
    assert resp.status_code == 200 and resp.json["receiver"]["retired_ms"]
    assert "phu-1" not in brokerauth.PasswordFile(tmp_path / "passwd").entries()
    with prog.test_request_context(headers={"Authorization": f"Bearer {conf['token']}"}):
        assert auth.receiver_from_bearer() is None
    with session_scope(prog) as s:
        assert health.summary(s, {"qd", "qd/phu", "qd/an"}, 0)["total"] == before - 1
    listed = [r["id"] for r in client.get("/api/v1/receivers", headers=MANAGER).json["receivers"]]
    assert "phu-1" not in listed
    assert "phu-1" in [r["id"] for r in client.get("/api/v1/receivers?retired=1", headers=MANAGER).json["receivers"]]
    assert client.get("/api/v1/receivers/phu-1", headers=MANAGER).status_code == 200  # history stays readable
    for path in ("/api/v1/receivers/phu-1/retire", "/api/v1/receivers/phu-1/bundle"):
        again = client.post(path, headers=MANAGER)
        assert (again.status_code, again.json["error"]["code"]) == (409, "receiver.retired")


def test_retired_receivers_are_not_expected_to_play(prog, client):
    tomorrow = (datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")) + timedelta(days=1)).strftime("%Y-%m-%d 09:00:00")
    item = client.post("/api/v1/programme/items", headers=ADMIN, json={
        "bulletin_id": 2, "area": "qd", "start": tomorrow}).json["item"]
    client.post(f"/api/v1/programme/items/{item['id']}/approve", headers=ADMIN)
    start = item["start_ms"]
    def due() -> set[str]:
        with session_scope(prog) as s:
            return {rx for _, _, rx in asrun.due_plays(s, start, start + 3600_000, "Asia/Ho_Chi_Minh")}

    assert due() == {"phu-1", "an-1"}
    client.post("/api/v1/receivers/an-1/retire", headers=MANAGER)
    assert due() == {"phu-1"}
    assert count_rows(prog, MissedPlay) == 0


def _connect(port: int, username: str, password: str) -> int:
    """The CONNACK reason code a login gets (0 = accepted)."""
    result: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{username}")
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(lambda: result, timeout=10, what="CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


@pytest.mark.skipif(mosquitto_binary() is None, reason="needs mosquitto")
def test_a_bundle_login_connects_and_a_retired_one_is_refused(tmp_path):
    passwd = tmp_path / "passwd"
    controller_password = "ctl-" + auth.new_token()[:16]
    brokerauth.PasswordFile(passwd).set("loaxa-controller", controller_password)
    broker = EmbeddedBroker(tmp_path / "broker", password_file=passwd,
                            acl_file=ROOT / "deploy" / "mosquitto" / "loaxa.acl").start()
    try:
        app = create_app(make_config(
            tmp_path, MQTT_URL=f"mqtt://loaxa-controller:{controller_password}@127.0.0.1:{broker.port}",
            MQTT_PASSWORD_FILE=str(passwd), MQTT_RELOAD_COMMAND=f"kill -HUP {broker.pid}"))
        db.upgrade(app.config["DATABASE_URL"])
        seed_district(app)
        svc = app.extensions["loaxa.services"]
        svc.start()
        try:
            wait_until(svc.link.connected.is_set, timeout=10, what="the controller's login accepted")
            client = app.test_client()
            assert client.post("/api/v1/receivers", headers=ADMIN, json={"id": "phu-7", "area": "qd/phu"}
                               ).status_code == 201
            files = _bundle(client.post("/api/v1/receivers/phu-7/bundle", headers=ADMIN, json={"sink": "null"}))
            conf = tomllib.loads(files["loaxa-phu-7/receiver.toml"].decode())
            assert conf["mqtt_url"] == broker.url
            # The box's own login works (after the reload); a guessed one and an anonymous one do not.
            wait_until(lambda: _connect(broker.port, "phu-7", conf["mqtt_password"]) == 0, timeout=10,
                       what="the new login accepted")
            assert _connect(broker.port, "phu-7", "guess") != 0
            assert _connect(broker.port, "", "") != 0
            # The real agent comes online with the bundle as it is (sink set to null above).
            bundle_dir = tmp_path / "bundle"
            with tarfile.open(fileobj=io.BytesIO(client.post("/api/v1/receivers/phu-7/bundle", headers=ADMIN,
                                                             json={"sink": "null"}).data)) as tar:
                tar.extractall(bundle_dir, filter="data")
            toml_path = bundle_dir / "loaxa-phu-7" / "receiver.toml"
            toml_path.write_text(toml_path.read_text().replace("/var/lib/loaxa-receiver", str(tmp_path / "rx")))
            proc = subprocess.Popen([sys.executable, "-m", "receiver", "run", "--config", str(toml_path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
            try:
                wait_until(lambda: client.get("/api/v1/receivers/phu-7", headers=ADMIN).json["receiver"]["online"],
                           timeout=30, what="the provisioned agent online")
            finally:
                proc.terminate()
                proc.wait(15)
            password = tomllib.loads(toml_path.read_text())["mqtt_password"]
            assert client.post("/api/v1/receivers/phu-7/retire", headers=ADMIN).status_code == 200
            wait_until(lambda: _connect(broker.port, "phu-7", password) != 0, timeout=10,
                       what="the retired login refused")
        finally:
            svc.stop()
            app.extensions["loaxa.engine"].dispose()
    finally:
        broker.stop()
