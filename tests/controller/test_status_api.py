"""/api/v1 clusters, faults and as-run: the permission matrix (each role, in scope and out of scope)."""

from __future__ import annotations

import pytest
from test_status_pages import watched  # noqa: F401  (the fixture: receivers heard through telemetry)

from controller.db import session_scope
from controller.models import Fault, FaultAck
from controller.services.telemetry import Telemetry
from schedules import events, topics
from schedules.events import now_ms

from helpers import basic

USERS = {"admin": None, "man-qd": "qd", "op-phu": "qd/phu", "op-an": "qd/an", "appr-phu": "qd/phu",
         "viewer": None}

ON_BOTH_DATABASES = True  # the dashboards' JSON and date SQL differ between the two


def _fault_ids(app) -> dict[str, int]:
    with session_scope(app) as db:
        return {f.rx_id: f.id for f in db.query(Fault).all()}


@pytest.mark.parametrize("user", sorted(USERS))
def test_clusters_list_only_what_the_user_may_see(watched, client, user):  # noqa: F811
    resp = client.get("/api/v1/clusters", headers=basic(user, "pw-" + user))
    assert resp.status_code == 200
    ids = {c["id"] for c in resp.json["clusters"]}
    expected = {"phu-1", "phu-2", "an-1"} if USERS[user] in (None, "qd") else \
        {"phu-1", "phu-2"} if USERS[user] == "qd/phu" else {"an-1"}
    assert ids == expected and resp.json["summary"]["total"] == len(expected)
    out = "qd/an" if USERS[user] == "qd/phu" else "qd/phu"
    scoped = client.get(f"/api/v1/clusters?area={out}", headers=basic(user, "pw-" + user))
    assert scoped.status_code == (200 if USERS[user] in (None, "qd") else 404)
    history = client.get("/api/v1/clusters/phu-1/history", headers=basic(user, "pw-" + user))
    assert history.status_code == (200 if "phu-1" in expected else 404)


def test_cluster_filters_and_bad_input(watched, client):  # noqa: F811
    h = basic("admin", "pw-admin")
    body = client.get("/api/v1/clusters?status=offline", headers=h).json
    assert [c["id"] for c in body["clusters"]] == ["phu-2"] and body["summary"]["offline"] == 1
    body = client.get("/api/v1/clusters?sort=signal&per_page=1&page=2", headers=h).json
    assert body["pages"] == 3 and len(body["clusters"]) == 1
    assert client.get("/api/v1/clusters?status=dead", headers=h).json["error"]["code"] == "request.bad_field"
    assert client.get("/api/v1/clusters?per_page=0", headers=h).status_code == 400
    assert client.get("/api/v1/clusters").status_code == 401
    hist = client.get("/api/v1/clusters/phu-1/history?hours=2", headers=h).json["history"]
    assert hist[0]["beats"] == 3 and hist[0]["offset_max"] == 30


@pytest.mark.parametrize(("user", "rx", "status"), [
    ("op-phu", "phu-1", 200), ("op-phu", "an-1", 404), ("op-an", "an-1", 200), ("op-an", "phu-1", 404),
    ("man-qd", "an-1", 200), ("admin", "phu-1", 200), ("appr-phu", "phu-1", 200), ("viewer", "phu-1", 403),
])
def test_fault_ack_matrix(watched, client, user, rx, status):  # noqa: F811
    fid = _fault_ids(watched)[rx]
    resp = client.post(f"/api/v1/faults/{fid}/ack", headers=basic(user, "pw-" + user), json={"note": "đã báo thợ"})
    assert resp.status_code == status
    with session_scope(watched) as db:
        ack = db.get(FaultAck, fid)
        assert (ack is not None) == (status == 200)
    if status == 200:
        assert resp.json["fault"]["state"] == "acked" and resp.json["fault"]["acked_by"] == user
        again = client.post(f"/api/v1/faults/{fid}/ack", headers=basic("admin", "pw-admin"))
        assert again.json["fault"]["acked_by"] == user  # the first acknowledgement stands


def test_fault_list_by_state_and_scope(watched, client):  # noqa: F811
    h = basic("op-phu", "pw-op-phu")
    body = client.get("/api/v1/faults", headers=h).json
    assert [f["rx"] for f in body["faults"]] == ["phu-1"] and body["stats"]["open"] == 1
    assert body["faults"][0]["label_vi"] == "Hỏng bộ khuếch đại" and body["working_share"]
    assert client.get("/api/v1/faults?state=resolved", headers=h).json["total"] == 0
    assert client.get("/api/v1/faults?area=qd/an", headers=h).status_code == 404
    assert client.get("/api/v1/faults?state=bogus", headers=h).status_code == 400
    assert client.get("/api/v1/faults", headers=basic("viewer", "pw-viewer")).json["total"] == 2


def test_asrun_json_and_csv(watched, client):  # noqa: F811
    h = basic("man-qd", "pw-man-qd")
    body = client.get("/api/v1/reports/as-run", headers=h).json
    assert body["counts"]["full"] == 1 and body["counts"]["partial"] == 1 and body["counts"]["missed"] == 1
    partial = next(r for r in body["rows"] if r["outcome"] == "partial")
    assert partial["pct"] == 25 and partial["reason"] == "preempted"
    missed = next(r for r in body["rows"] if r["outcome"] == "missed")
    assert missed["reason"] == "offline" and missed["rx_id"] == "phu-2"
    assert sum(sum(v.values()) for v in body["hours"]["hours"].values()) == pytest.approx(750_000 / 3_600_000, 0.01)
    csv_resp = client.get("/api/v1/reports/as-run?format=csv&period=month", headers=h)
    assert csv_resp.mimetype == "text/csv" and csv_resp.data.decode("utf-8-sig").count("\n") == 4
    # The stream read its rows inside the request: its connection went back to the pool.
    assert watched.extensions["loaxa.engine"].pool.checkedout() == 0
    op = basic("op-phu", "pw-op-phu")
    assert client.get("/api/v1/reports/as-run?area=qd/an", headers=op).status_code == 404
    assert client.get("/api/v1/reports/as-run", headers=op).json["counts"]["partial"] == 0
    assert client.get("/api/v1/reports/as-run?from=2026-13-01", headers=h).json["error"]["code"] == "request.bad_date"
    assert client.get("/api/v1/reports/as-run?from=2026-11-20&to=2026-11-01", headers=h).status_code == 400
    assert client.get("/api/v1/reports/as-run?format=xml", headers=h).status_code == 400


def test_openapi_lists_the_status_paths(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert {"/api/v1/clusters", "/api/v1/faults", "/api/v1/faults/{id}/ack", "/api/v1/reports/as-run"} <= set(paths)


def test_network_and_signal_from_the_receivers_heartbeat(watched, client):  # noqa: F811
    """The agent reports ``network: {type, signal_pct, rssi_dbm, tech}`` (schedules.heartbeat)."""
    tele = Telemetry(watched)
    tele.handle(topics.rx_hb("an-1"), events.encode({"v": 1, "rx": "an-1", "ts": now_ms(), "network": {
        "type": "cellular", "signal_pct": 90, "rssi_dbm": None, "tech": "lte"}}))
    tele.handle(topics.rx_hb("phu-2"), events.encode({"v": 1, "rx": "phu-2", "ts": now_ms(), "network": {
        "type": "wifi", "signal_pct": None, "rssi_dbm": -100, "tech": None}}))
    h = basic("admin", "pw-admin")
    rows = client.get("/api/v1/clusters?sort=signal", headers=h).json["clusters"]
    # phu-1's last beat said -72 dBm (66 %), phu-2 -100 dBm (21 %), an-1 90 %.
    assert [r["id"] for r in rows] == ["phu-2", "phu-1", "an-1"]
    assert [r["id"] for r in client.get("/api/v1/clusters?sort=signal&dir=desc", headers=h).json["clusters"]] \
        == ["an-1", "phu-1", "phu-2"]
    an = next(r for r in rows if r["id"] == "an-1")
    assert (an["network"], an["network_tech"], an["signal_pct"], an["signal"]) == ("4G", "lte", 90.0, None)
    assert next(r for r in rows if r["id"] == "phu-2")["signal"] == -100.0
