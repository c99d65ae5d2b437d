"""Programme API: placement, play modes, approval, sessions, timeline, audit, and every refusal."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from controller.db import session_scope
from controller.models import Area, AuditEntry, ProgrammeItem

from helpers import basic, count_rows

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
ADMIN = basic("admin", "pw-admin")
OP_PHU = basic("op-phu", "pw-op-phu")
OP_AN = basic("op-an", "pw-op-an")
APPROVER = basic("appr-phu", "pw-appr-phu")
MANAGER = basic("man-qd", "pw-man-qd")
VIEWER = basic("viewer", "pw-viewer")

ON_BOTH_DATABASES = True


def next_weekday() -> date:
    d = datetime.now(TZ).date() + timedelta(days=1)
    while d.weekday() == 6:
        d += timedelta(days=1)
    return d


def test_session_item_daily_with_repeats_lands_on_the_timeline(prog, client):
    body = {"bulletin_id": 1, "area": "qd/phu", "session": "evening", "mode": "daily", "repeat": 2, "gap_s": 30}
    resp = client.post("/api/v1/programme/items", json=body, headers=OP_PHU)
    assert resp.status_code == 201, resp.json
    assert resp.json["item"]["status"] == "draft"  # an operator cannot approve
    day = next_weekday()
    tl = client.get(f"/api/v1/areas/qd/phu/timeline?date={day}", headers=OP_PHU).json
    assert [s["key"] for s in tl["sessions"]] == ["morning", "evening"]
    assert tl["items"] == []  # drafts never enter manifests
    item_id = resp.json["item"]["id"]
    assert client.post(f"/api/v1/programme/items/{item_id}/approve", headers=APPROVER).status_code == 200
    tl = client.get(f"/api/v1/areas/qd/phu/timeline?date={day}", headers=OP_PHU).json
    evening = int(datetime.combine(day, datetime.min.time().replace(hour=17), TZ).timestamp() * 1000)
    assert [(i["start_ms"], i["duration_ms"]) for i in tl["items"]] == [
        (evening, 600_000), (evening + 630_000, 600_000)]
    assert tl["underruns"][0]["free_ms"] == 3600_000 - 1_230_000


def test_overrun_and_conflict_are_shown(prog, client):
    day = next_weekday()
    for bid in (1, 2):
        body = {"bulletin_id": bid, "area": "qd/phu", "session": "evening", "mode": "once", "date": str(day),
                "order": bid, "repeat": 2 if bid == 1 else 1}  # 10 + 10 + 50 minutes in a 60-minute session
        assert client.post("/api/v1/programme/items", json=body, headers=ADMIN).status_code == 201
    district = {"bulletin_id": 2, "area": "qd", "at": "17:20", "mode": "once", "date": str(day),
                "priority": "priority"}
    assert client.post("/api/v1/programme/items", json=district, headers=ADMIN).status_code == 201
    tl = client.get(f"/api/v1/areas/qd/phu/timeline?date={day}", headers=ADMIN).json
    assert [o["cut_ms"] for o in tl["overruns"]] == [600_000]
    assert tl["conflicts"] and "lower priority" in tl["conflicts"][0]["reason"]
    assert {i["from_area"] for i in tl["items"]} == {"qd", "qd/phu"}


def test_bad_items_are_refused_and_nothing_is_saved(prog, client):
    day = str(next_weekday())
    cases = [
        ({"bulletin_id": 1, "session": "evening", "mode": "once", "date": day, "repeat": 0}, "item.bad_repeat"),
        ({"bulletin_id": 1, "session": "evening", "mode": "once", "date": day, "repeat": 11}, "item.bad_repeat"),
        ({"bulletin_id": 1, "session": "evening", "mode": "range", "date_from": day, "date_to": "2020-01-01"},
         "item.range_reversed"),
        ({"kind": "relay", "relay_url": "file:///etc/passwd", "duration_s": 600, "area": "qd/phu",
          "session": "evening", "mode": "daily"}, "item.bad_relay_url"),
        ({"bulletin_id": 1, "session": "noon", "mode": "daily"}, "item.unknown_session"),
        # Communes hold no session on Sundays: a Sunday's evening would never play.
        ({"bulletin_id": 1, "session": "evening", "mode": "once",
          "date": str(next_weekday() + timedelta(days=6 - next_weekday().weekday()))}, "item.unknown_session"),
        ({"bulletin_id": 1, "session": "evening", "at": "17:00", "mode": "daily"}, "item.bad_placement"),
        ({"bulletin_id": 1, "mode": "daily"}, "schedule.bad_time"),
        ({"bulletin_id": 1, "session": "evening", "mode": "weekdays"}, "item.no_weekdays"),
        ({"bulletin_id": 1, "session": "evening", "mode": "daily", "weekdays": [7]}, "item.bad_weekday"),
        ({"bulletin_id": 3, "session": "evening", "mode": "daily"}, "bulletin.not_ready"),
        ({"bulletin_id": 1, "session": "evening", "mode": "daily", "exclude": ["an-1"]}, "item.bad_exclude"),
        ({"bulletin_id": 1, "session": "evening", "mode": "daily", "colour": "red"}, "request.unknown_field"),
        ({"bulletin_id": 1, "at": "25:00", "mode": "daily"}, "session.bad_time"),
    ]
    for body, code in cases:
        resp = client.post("/api/v1/programme/items", json={"area": "qd/phu", **body}, headers=ADMIN)
        assert resp.status_code in (400, 409, 422), (body, resp.json)
        assert resp.json["error"]["code"] == code, (body, resp.json)
        assert resp.json["error"]["message_vi"]
    # Another commune's area is refused as if it did not exist.
    resp = client.post("/api/v1/programme/items", headers=OP_AN,
                       json={"bulletin_id": 1, "area": "qd/phu", "session": "evening", "mode": "daily"})
    assert resp.status_code == 404
    resp = client.post("/api/v1/programme/items", headers=OP_PHU,
                       json={"bulletin_id": 1, "targets": ["qd/an"], "session": "evening", "mode": "daily"})
    assert resp.status_code == 404
    assert client.post("/api/v1/programme/items", headers=VIEWER, json={}).status_code == 403
    assert count_rows(prog, ProgrammeItem) == 0 and count_rows(prog, AuditEntry) == 0


def test_approval_rules_and_audit(prog, client):
    with session_scope(prog) as db:
        db.get(Area, "qd/phu").require_distinct_approver = True
    body = {"bulletin_id": 1, "area": "qd/phu", "session": "morning", "mode": "daily"}
    item = client.post("/api/v1/programme/items", json=body, headers=APPROVER).json["item"]
    assert item["status"] == "draft"  # the area wants a second person
    own = client.post(f"/api/v1/programme/items/{item['id']}/approve", headers=APPROVER)
    assert own.status_code == 403 and own.json["error"]["code"] == "approval.same_person"
    assert client.post(f"/api/v1/programme/items/{item['id']}/approve", headers=OP_PHU).status_code == 403
    assert client.post(f"/api/v1/programme/items/{item['id']}/approve", headers=OP_AN).status_code == 403
    ok = client.post(f"/api/v1/programme/items/{item['id']}/approve", headers=MANAGER)
    assert ok.status_code == 200 and ok.json["item"]["status"] == "approved"
    # An edit by someone who may not approve sends it back to draft.
    edited = client.patch(f"/api/v1/programme/items/{item['id']}", json={"session": "evening"}, headers=OP_PHU)
    assert edited.status_code == 200 and edited.json["item"]["status"] == "draft"
    assert edited.json["item"]["session"] == "evening"
    rej = client.post(f"/api/v1/programme/items/{item['id']}/reject", json={"reason": "sai giờ"}, headers=MANAGER)
    assert rej.json["item"]["status"] == "rejected"
    assert client.delete(f"/api/v1/programme/items/{item['id']}", headers=OP_PHU).status_code == 204
    assert client.get(f"/api/v1/programme/items/{item['id']}", headers=OP_PHU).status_code == 404
    trail = client.get(f"/api/v1/audit?object_id={item['id']}", headers=MANAGER).json["audit"]
    assert [a["action"] for a in reversed(trail)] == ["create", "approve", "update", "reject", "delete"]
    assert client.get("/api/v1/audit", headers=OP_PHU).status_code == 403


def test_session_templates_and_extra_sessions(prog, client):
    got = client.get("/api/v1/areas/qd/sessions", headers=MANAGER).json
    assert got["source"] == "district default" and len(got["sessions"]) == 3
    bad = [
        ([{"key": "a", "name": "A", "start": "07:00", "end": "06:00"}], "session.ends_before_start"),
        ([{"key": "a", "name": "A", "start": "06:00", "end": "07:00"},
          {"key": "b", "name": "B", "start": "06:30", "end": "08:00"}], "session.overlap"),
        ([{"key": "a", "name": "A", "start": "23:00", "end": "24:30"}], "session.bad_time"),
    ]
    for sessions, code in bad:
        resp = client.put("/api/v1/areas/qd/sessions", json={"sessions": sessions}, headers=MANAGER)
        assert resp.json["error"]["code"] == code
    assert client.get("/api/v1/areas/qd/sessions", headers=MANAGER).json["source"] == "district default"
    assert client.put("/api/v1/areas/qd/sessions", json={"sessions": []}, headers=OP_PHU).status_code == 403
    new = [{"key": "morning", "name": "Sáng", "start": "05:00", "end": "06:00", "weekdays": [0, 1, 2, 3, 4, 5, 6]}]
    assert client.put("/api/v1/areas/qd/sessions", json={"sessions": new}, headers=MANAGER).json["source"] == "area"
    day = next_weekday()
    storm = {"date": str(day), "key": "storm", "name": "Tin bão", "start": "20:00", "end": "20:30"}
    assert client.post("/api/v1/areas/qd/phu/extra-sessions", json=storm, headers=OP_PHU).status_code == 201
    clash = {**storm, "key": "storm2", "start": "17:30", "end": "18:30"}
    assert client.post("/api/v1/areas/qd/phu/extra-sessions", json=clash, headers=OP_PHU).json["error"]["code"] \
        == "session.overlap"
    past = {**storm, "date": "2020-01-01"}
    assert client.post("/api/v1/areas/qd/phu/extra-sessions", json=past, headers=OP_PHU).status_code == 422
    assert client.post("/api/v1/areas/qd/an/extra-sessions", json=storm, headers=OP_PHU).status_code == 404
    body = {"bulletin_id": 1, "area": "qd/phu", "session": "storm", "mode": "once", "date": str(day)}
    assert client.post("/api/v1/programme/items", json=body, headers=ADMIN).status_code == 201
    tl = client.get(f"/api/v1/areas/qd/phu/timeline?date={day}", headers=OP_PHU).json
    assert "storm" in [s["key"] for s in tl["sessions"]]
    assert [datetime.fromtimestamp(i["start_ms"] / 1000, TZ).strftime("%H:%M") for i in tl["items"]] == ["20:00"]


def test_timeline_refusals(prog, client):
    assert client.get("/api/v1/areas/qd/phu/timeline?days=9", headers=OP_PHU).status_code == 400
    assert client.get("/api/v1/areas/qd/phu/timeline?date=tomorrow", headers=OP_PHU).status_code == 400
    assert client.get("/api/v1/areas/qd/an/timeline", headers=OP_PHU).status_code == 404
    week = client.get("/api/v1/areas/qd/phu/timeline?days=7", headers=OP_PHU).json
    assert len(week["sessions"]) == 12  # two a day, Monday to Saturday


def test_relay_and_silence_separator(prog, client):
    day = str(next_weekday())
    relay = {"kind": "relay", "relay_url": "https://stream.vov.vn/vov1", "duration_s": 900, "fallback_bulletin_id": 1,
             "area": "qd", "session": "morning", "mode": "once", "date": day}
    resp = client.post("/api/v1/programme/items", json=relay, headers=MANAGER)
    assert resp.status_code == 201, resp.json
    gap = {"kind": "separator", "duration_s": 60, "area": "qd", "session": "morning", "mode": "once", "date": day,
           "order": 1}
    assert client.post("/api/v1/programme/items", json=gap, headers=MANAGER).status_code == 201
    tl = client.get(f"/api/v1/areas/qd/timeline?date={day}", headers=MANAGER).json
    assert [(i["kind"], i["duration_ms"]) for i in tl["items"]] == [("relay", 900_000), ("separator", 60_000)]
    svc = prog.extensions["loaxa.services"]
    # Plan from the start of that day: the manifest window (48 h) then holds its morning whatever the
    # hour and weekday the test runs at (from a Saturday in Vietnam the next weekday is Monday, 2+ days on).
    day_start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=TZ)
    svc.dispatcher.publish_everything(now=int(day_start.timestamp() * 1000))
    from controller.models import Publication
    from schedules import signing
    from schedules.manifest import Manifest

    with session_scope(prog) as db:
        pub = db.query(Publication).filter_by(kind="manifest", scope="area/qd").order_by(Publication.version.desc())[0]
        body = signing.verify(svc.key.public_key(), pub.payload.encode(), kind="manifest", scope="area/qd")
    items = Manifest.from_body(body).items
    day_items = [i for i in items if i.id.split(".")[1] == day.replace("-", "")]
    assert day_items[0].url == "https://stream.vov.vn/vov1" and day_items[0].media.sha256 == "a" * 64  # fallback
    assert day_items[1].kind == "separator" and day_items[1].media is None


def test_a_day_that_has_passed_is_refused(prog, client):
    body = {"bulletin_id": 1, "area": "qd/phu", "session": "evening", "mode": "once", "date": "2020-01-06"}
    resp = client.post("/api/v1/programme/items", json=body, headers=ADMIN)
    assert resp.status_code == 422 and resp.json["error"]["code"] == "schedule.in_past"
