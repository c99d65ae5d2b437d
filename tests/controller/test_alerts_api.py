"""The emergency API without a broker: who may send, what is refused (and changes nothing), what is stored.

The services are not started here, so a valid alert is made (its sound, through real ffmpeg and
espeak-ng) and "sent" to a broker link that does not exist; the end-to-end tests in
``tests/test_alerts_end_to_end.py`` send real ones to real receivers.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from controller import auth
from controller.db import session_scope
from controller.models import Alert, AlertTemplate, Area, AuditEntry, Receiver, User

from helpers import wait_until

OP = ("op-phu", "pw-op-phu")
MAN = ("man-qd", "pw-man-qd")


@pytest.fixture
def fleet(prog):
    """The district of ``prog`` (receivers phu-1 and an-1) plus phu-2, a granted operator and TTS offline."""
    prog.config["TTS_ENGINES"] = "espeak"
    with session_scope(prog) as db:
        db.add(Receiver(id="phu-2", area_id="qd/phu", name="P2", token_hash=auth.token_hash("x3"), created_ms=0))
        db.add(User(username="op-ok", password_hash=auth.hash_password("pw-op-ok"), role="operator",
                    area_id="qd/phu", created_ms=0, may_alert=True))
    return prog


def _template_id(app, topic: str = "storm") -> int:
    with session_scope(app) as db:
        return db.scalars(select(AlertTemplate.id).where(AlertTemplate.topic == topic,
                                                         AlertTemplate.area_id.is_(None))).first()


def _count(app) -> int:
    with session_scope(app) as db:
        return db.scalar(select(func.count()).select_from(Alert))


def _drill(app, **extra) -> dict:
    return {"mode": "drill", "areas": ["qd/phu"], "content": {"kind": "template", "template_id": _template_id(app)},
            **extra}


def test_an_operator_needs_the_grant_and_a_viewer_never_sends(fleet, client):
    body = _drill(fleet)
    assert client.post("/api/v1/alerts", json=body, auth=OP).json["error"]["code"] == "alert.forbidden"
    assert client.post("/api/v1/alerts", json=body, auth=("viewer", "pw-viewer")).status_code == 403
    assert client.post("/api/v1/alerts", json=body).status_code == 401
    assert _count(fleet) == 0
    # The manager grants it; the operator may then send to their commune only.
    uid = client.get("/api/v1/users", auth=MAN).json["users"]
    op = next(u for u in uid if u["username"] == "op-phu")
    assert op["may_alert"] is False
    assert client.patch(f"/api/v1/users/{op['id']}", json={"may_alert": True}, auth=MAN).json["user"]["may_alert"]
    preview = client.post("/api/v1/alerts/preview", json=body, auth=OP).json
    assert preview["clusters"] == 2 and preview["where"] == "xã Quảng Phú" and preview["mode"] == "drill"
    outside = dict(body, areas=["qd/an"])
    refused = client.post("/api/v1/alerts", json=outside, auth=OP)
    assert refused.status_code == 404 and refused.json["error"]["code"] == "area.not_found"
    assert "quyền" in refused.json["error"]["message_vi"]
    assert client.post("/api/v1/alerts", json=dict(body, areas=["qd"]), auth=OP).status_code == 404
    assert _count(fleet) == 0


@pytest.mark.parametrize(("change", "code"), [
    ({"areas": [], "receivers": []}, "alert.no_targets"),
    ({"content": None}, "alert.no_content"),
    ({"content": {"kind": "text", "text": "   "}}, "alert.no_content"),
    ({"content": {"kind": "text", "text": "x" * 5001}}, "alert.text_too_long"),
    ({"content": {"kind": "bulletin", "bulletin_id": 3}}, "alert.bulletin_not_ready"),
    ({"content": {"kind": "bulletin", "bulletin_id": 2**31 - 1}}, "alert.bad_bulletin"),
    ({"content": {"kind": "template", "template_id": "1"}}, "alert.bad_template"),
    ({"mode": "test"}, "alert.bad_mode"),
    ({"mode": None}, "alert.bad_mode"),
    ({"until_ms": 1_000}, "alert.end_in_past"),
    ({"until_ms": "tomorrow"}, "alert.bad_end"),
    ({"volume": 101}, "alert.bad_volume"),
    ({"volume": True}, "alert.bad_volume"),
    ({"repeat": 0}, "alert.bad_repeat"),
    ({"gap_s": 99}, "alert.bad_gap"),
    ({"chime": "yes"}, "alert.bad_chime"),
    ({"if_running": "whatever"}, "alert.bad_choice"),
    ({"areas": "qd/phu"}, "alert.bad_targets"),
    ({"areas": ["nowhere"]}, "area.not_found"),
    ({"receivers": ["an-1"], "areas": []}, "receiver.not_found"),
    ({"content": {"kind": "stream", "url": "ftp://vov.vn/live"}}, "alert.bad_url"),
    ({"content": {"kind": "stream", "url": "rtsp://cam.example/live"}}, "alert.url_scheme"),
    ({"content": {"kind": "stream", "url": "http://127.0.0.1:8080/media/x.mp3"}}, "alert.url_forbidden"),
    ({"content": {"kind": "stream", "url": "http://192.168.1.10:8000/live"}}, "alert.url_forbidden"),
    ({"content": {"kind": "stream", "url": "http://[::1]/live"}}, "alert.url_forbidden"),
    ({"content": {"kind": "stream", "url": "javascript:alert(1)"}}, "alert.bad_url"),
])
def test_bad_requests_get_a_clear_vietnamese_error_and_change_nothing(fleet, client, change, code):
    with session_scope(fleet) as db:
        audits = db.scalar(select(func.count()).select_from(AuditEntry))
    resp = client.post("/api/v1/alerts", json={**_drill(fleet), **change}, auth=("op-ok", "pw-op-ok"))
    assert 400 <= resp.status_code < 500, resp.json
    err = resp.json["error"]
    assert err["code"] == code, err
    assert err["message_vi"] and err["message_vi"] != err["message"]
    assert _count(fleet) == 0
    with session_scope(fleet) as db:
        assert db.scalar(select(func.count()).select_from(AuditEntry)) == audits


def test_an_oversized_or_hostile_body_is_refused(fleet, client):
    big = {**_drill(fleet), "content": {"kind": "text", "text": "a" * 200_000}}
    assert client.post("/api/v1/alerts", json=big, auth=MAN).status_code == 413
    assert client.post("/api/v1/alerts", data="[1]", content_type="application/json", auth=MAN).status_code == 400
    assert _count(fleet) == 0


def test_a_drill_is_made_sent_and_recorded_with_its_hostile_title_kept_as_data(fleet, client):
    title = "<script>alert(1)</script> 100% {{ 7*7 }}"
    resp = client.post("/api/v1/alerts", json=_drill(fleet, title=title, repeat=1, chime=False), auth=MAN)
    assert resp.status_code == 202, resp.json
    alert = resp.json["alert"]
    assert alert["mode"] == "drill" and alert["title"] == title and alert["clusters"] == 2
    assert alert["scopes"] == ["area/qd/phu"] and alert["status"] in ("preparing", "running")
    done = wait_until(lambda: (a := client.get(f"/api/v1/alerts/{alert['id']}", auth=MAN).json)["alert"]["status"]
                      != "preparing" and a, timeout=120, what="the drill's sound")
    assert done["alert"]["status"] == "running", done["alert"]["error"]
    # Spoken by the offline voice (the drill's notice too); nothing reached a receiver (no broker here).
    assert done["alert"]["tts_engine"] == "espeak" and done["alert"]["duration_ms"] > 10_000
    status = done["status"]
    assert status["total"] == 2 and {c["state"] for c in status["clusters"]} == {"offline"}
    # The same inputs give the same sound, at once.
    again = client.post("/api/v1/alerts", json=_drill(fleet, repeat=1, chime=False, if_running="replace"),
                        auth=MAN).json["alert"]
    second = wait_until(lambda: (a := client.get(f"/api/v1/alerts/{again['id']}", auth=MAN).json["alert"])["status"]
                        == "running" and a, timeout=30, what="the reused sound")
    assert second["media_sha256"] == done["alert"]["media_sha256"]
    first = client.get(f"/api/v1/alerts/{alert['id']}", auth=MAN).json["alert"]
    assert first["status"] == "stopped" and first["end_reason"] == "replaced"
    # The operator of the other commune does not see it; the audit log has it.
    assert client.get(f"/api/v1/alerts/{alert['id']}", auth=("op-an", "pw-op-an")).status_code == 404
    with session_scope(fleet) as db:
        actions = set(db.scalars(select(AuditEntry.action).where(AuditEntry.object_id == alert["id"])))
    assert {"alert_drill", "alert_started", "alert_stop"} <= actions


def test_a_second_alert_needs_an_explicit_choice(fleet, client):
    first = client.post("/api/v1/alerts", json=_drill(fleet, repeat=1), auth=MAN).json["alert"]
    clash = client.post("/api/v1/alerts", json=_drill(fleet, repeat=1), auth=MAN)
    assert clash.status_code == 409 and clash.json["error"]["code"] == "alert.running"
    assert "xếp hàng" in clash.json["error"]["message_vi"]
    queued = client.post("/api/v1/alerts", json=_drill(fleet, repeat=1, if_running="queue"), auth=MAN).json["alert"]
    assert queued["status"] == "queued"
    # Another commune is free: no choice needed there.
    other = client.post("/api/v1/alerts", json=_drill(fleet, areas=["qd/an"], repeat=1), auth=MAN)
    assert other.status_code == 202
    # Stopping the first lets the queued one go on.
    assert client.post(f"/api/v1/alerts/{first['id']}/stop", json={}, auth=MAN).status_code == 200
    wait_until(lambda: client.get(f"/api/v1/alerts/{queued['id']}", auth=MAN).json["alert"]["status"]
               in ("preparing", "running"), what="the queued alert to go on")
    again = client.post(f"/api/v1/alerts/{first['id']}/stop", json={}, auth=MAN)
    assert again.status_code == 409 and again.json["error"]["code"] == "alert.over"


def test_two_person_rule_and_correction(fleet, client):
    assert client.patch("/api/v1/areas/qd/phu", json={"alert_needs_confirm": True}, auth=MAN).status_code == 200
    live = {"mode": "live", "areas": ["qd/phu"], "content": {"kind": "text", "text": "Lũ lên nhanh."}, "repeat": 1}
    preview = client.post("/api/v1/alerts/preview", json=live, auth=("op-ok", "pw-op-ok")).json
    assert preview["needs_confirm"] is True and preview["tts_fallback"] is True  # espeak only: says so
    alert = client.post("/api/v1/alerts", json=live, auth=("op-ok", "pw-op-ok")).json["alert"]
    assert alert["status"] == "awaiting_confirm"
    same = client.post(f"/api/v1/alerts/{alert['id']}/confirm", json={}, auth=("op-ok", "pw-op-ok"))
    assert same.status_code == 403 and same.json["error"]["code"] == "alert.same_person"
    assert client.post(f"/api/v1/alerts/{alert['id']}/confirm", json={}, auth=OP).status_code == 403  # no grant
    ok = client.post(f"/api/v1/alerts/{alert['id']}/confirm", json={}, auth=MAN)
    assert ok.status_code == 200 and ok.json["alert"]["confirmed_by"] is not None
    wait_until(lambda: client.get(f"/api/v1/alerts/{alert['id']}", auth=MAN).json["alert"]["status"] == "running",
               timeout=120, what="the confirmed alert to run")
    # A drill never waits for the second person.
    drill = client.post("/api/v1/alerts", json=_drill(fleet, areas=["qd/an"]), auth=MAN).json["alert"]
    assert drill["status"] != "awaiting_confirm"
    # The correction: the alert stops, the prepared correction text goes to the same targets.
    fix = client.post(f"/api/v1/alerts/{alert['id']}/correction", json={}, auth=MAN)
    assert fix.status_code == 202, fix.json
    correction = fix.json["alert"]
    assert correction["corrects"] == alert["id"] and correction["mode"] == "live"
    assert correction["scopes"] == ["area/qd/phu"] and "đính chính" in correction["text"]
    assert correction["status"] == "awaiting_confirm"  # the area's rule holds for corrections too
    assert client.get(f"/api/v1/alerts/{alert['id']}", auth=MAN).json["alert"]["status"] == "stopped"
    again = client.post(f"/api/v1/alerts/{correction['id']}/correction", json={}, auth=MAN)
    assert again.status_code == 409


def test_templates_per_area(fleet, client):
    names = [t["name"] for t in client.get("/api/v1/alert-templates", auth=OP).json["templates"]]
    assert "Bão mạnh sắp đổ bộ" in names and "Thông báo đính chính" in names
    made = client.post("/api/v1/alert-templates", auth=MAN,
                       json={"area": "qd/phu", "topic": "flood", "name": "Lũ sông Bồ", "text": "Nước sông Bồ lên."})
    assert made.status_code == 201
    tid = made.json["template"]["id"]
    assert "Lũ sông Bồ" in [t["name"] for t in client.get("/api/v1/alert-templates", auth=OP).json["templates"]]
    assert "Lũ sông Bồ" not in [t["name"] for t in
                                client.get("/api/v1/alert-templates", auth=("op-an", "pw-op-an")).json["templates"]]
    assert client.patch(f"/api/v1/alert-templates/{tid}", json={"text": ""}, auth=MAN).status_code == 400
    assert client.patch(f"/api/v1/alert-templates/{_template_id(fleet)}", json={"text": "x"}, auth=MAN).status_code \
        == 404  # everyone's templates belong to the root administrators
    assert client.delete(f"/api/v1/alert-templates/{tid}", auth=MAN).status_code == 204


def test_stream_sources(fleet, client):
    bad = client.post("/api/v1/stream-sources", json={"area": "qd", "name": "VOV1", "url": "file:///etc/passwd"},
                      auth=MAN)
    assert bad.status_code == 400
    ok = client.post("/api/v1/stream-sources", json={"area": "qd", "name": "VOV1", "url": "https://vov.example/1"},
                     auth=MAN)
    assert ok.status_code == 201
    assert [s["name"] for s in client.get("/api/v1/stream-sources", auth=OP).json["sources"]] == ["VOV1"]
    assert client.post("/api/v1/stream-sources", json={"area": "qd", "name": "x", "url": "https://a.example"},
                       auth=OP).status_code == 403


def test_area_flag_is_checked(fleet, client):
    assert client.patch("/api/v1/areas/qd/phu", json={"alert_needs_confirm": "yes"}, auth=MAN).status_code == 400
    with session_scope(fleet) as db:
        assert db.get(Area, "qd/phu").alert_needs_confirm is False


def test_drill_and_live_are_told_apart_in_the_as_run_report(fleet, client):
    """Receivers' reports of two alerts, through the real telemetry path: the report names each as what it was."""
    from controller.services.telemetry import Telemetry
    from schedules import events, topics
    from schedules.events import now_ms

    start = now_ms() - 60_000
    with session_scope(fleet) as db:
        for alert_id, mode, title in (("al-drill-1", "drill", "Diễn tập bão"), ("al-live-1", "live", "Lũ <b>về</b>")):
            db.add(Alert(id=alert_id, mode=mode, status="ended", title=title, area_id="qd/phu",
                         targets='{"areas": ["qd/phu"], "receivers": []}', scopes='["area/qd/phu"]',
                         target_rx='["phu-1"]', content_kind="text", text="x", volume=100, chime=True, repeat=1,
                         gap_s=1.0, created_ms=start, started_ms=start, ended_ms=start + 20_000))
    tele = Telemetry(fleet)
    for alert_id, mode in (("al-drill-1", "drill"), ("al-live-1", "live")):
        tele.handle(topics.rx_events("phu-1"), events.encode(events.make_event(
            "phu-1", events.PLAYBACK_STARTED, item_id=alert_id, planned_start_ms=start, mode=mode)))
        tele.handle(topics.rx_events("phu-1"), events.encode(events.make_event(
            "phu-1", events.PLAYBACK_FINISHED, item_id=alert_id, planned_start_ms=start, end_reason="complete",
            played_ms=20_000, planned_duration_ms=20_000, mode=mode)))
    report = client.get("/api/v1/reports/as-run", auth=MAN).json
    kinds = {r["occurrence_id"]: r["broadcast"] for r in report["rows"]}
    assert kinds == {"al-drill-1": "drill", "al-live-1": "emergency"}
    titles = {o["occurrence_id"]: (o["title"], o["broadcast"]) for o in report["occurrences"]}
    assert titles["al-drill-1"] == ("Diễn tập bão", "drill") and titles["al-live-1"] == ("Lũ <b>về</b>", "emergency")
    csv_text = client.get("/api/v1/reports/as-run?format=csv", auth=MAN).data.decode("utf-8-sig")
    header, *lines = csv_text.strip().splitlines()
    assert header.endswith(",broadcast")
    assert any(line.startswith("al-drill-1,,Diễn tập bão,") and line.endswith(",drill") for line in lines)
    assert any(line.startswith("al-live-1,,Lũ <b>về</b>,") and line.endswith(",emergency") for line in lines)
    # The page: a chip of each colour, the title escaped.
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "man-qd", "password": "pw-man-qd", "csrf_token": csrf}) \
        .status_code == 302
    html = client.get("/reports?outcome=all").text
    assert 'data-broadcast="drill"><span class="chip drill">Diễn tập</span> Diễn tập bão' in html
    assert "Lũ &lt;b&gt;về&lt;/b&gt;" in html and "Lũ <b>về</b>" not in html


def test_relay_now_at_programme_level_and_its_stop(fleet, client):
    from controller.models import ProgrammeItem

    body = {"areas": ["qd/phu"], "url": "https://vov.example/vov1", "level": "priority", "duration_s": 600,
            "name": "VOV1"}
    assert client.post("/api/v1/relays", json=body, auth=OP).status_code == 403  # operators may not
    for change, code in (({"level": "loud"}, "relay.bad_level"), ({"areas": []}, "relay.no_targets"),
                         ({"duration_s": 5}, "relay.bad_duration"),
                         ({"url": "rtmp://x.example/a"}, "alert.url_scheme"),
                         ({"url": "http://10.0.0.5/a"}, "alert.url_forbidden"),
                         ({"source_id": 12345}, "stream.not_found")):
        resp = client.post("/api/v1/relays", json={**body, **change}, auth=MAN)
        assert resp.status_code in (400, 404) and resp.json["error"]["code"] == code, (change, resp.json)
    with session_scope(fleet) as db:
        assert db.scalar(select(func.count()).select_from(ProgrammeItem)) == 0
    made = client.post("/api/v1/relays", json=body, auth=MAN)
    assert made.status_code == 201, made.json
    relay = made.json["relay"]
    assert relay["kind"] == "programme" and relay["level"] == "priority" and relay["duration_ms"] == 600_000
    item = client.get(f"/api/v1/programme/items/{relay['item_id']}", auth=MAN).json["item"]
    assert item["status"] == "approved" and item["kind"] == "relay" and item["priority"] == "priority"
    assert client.post(f"/api/v1/relays/{relay['item_id']}/stop", auth=("op-an", "pw-op-an")).status_code == 403
    assert client.post(f"/api/v1/relays/{relay['item_id']}/stop", auth=MAN).status_code == 200
    assert client.get(f"/api/v1/programme/items/{relay['item_id']}", auth=MAN).status_code == 404
    # At emergency level it is an alert whose content is the stream.
    urgent = client.post("/api/v1/relays", json={**body, "level": "emergency"}, auth=MAN)
    assert urgent.status_code == 202 and urgent.json["alert"]["content"] == "stream"
    assert urgent.json["alert"]["stream_url"] == body["url"] and urgent.json["alert"]["mode"] == "live"


def test_a_confirmed_alert_keeps_its_senders_choice_to_replace(fleet, client):
    drill = client.post("/api/v1/alerts", json=_drill(fleet, repeat=1), auth=MAN).json["alert"]
    assert client.patch("/api/v1/areas/qd/phu", json={"alert_needs_confirm": True}, auth=MAN).status_code == 200
    live = {"mode": "live", "areas": ["qd/phu"], "content": {"kind": "text", "text": "Lũ lên nhanh."}, "repeat": 1,
            "if_running": "replace"}
    alert = client.post("/api/v1/alerts", json=live, auth=("op-ok", "pw-op-ok")).json["alert"]
    assert alert["status"] == "awaiting_confirm"
    # Waiting for the second person stops nothing yet.
    assert client.get(f"/api/v1/alerts/{drill['id']}", auth=MAN).json["alert"]["status"] in ("preparing", "running")
    confirmed = client.post(f"/api/v1/alerts/{alert['id']}/confirm", json={}, auth=MAN).json["alert"]
    assert confirmed["status"] in ("preparing", "running")
    stopped = client.get(f"/api/v1/alerts/{drill['id']}", auth=MAN).json["alert"]
    assert stopped["status"] in ("stopped", "cancelled") and stopped["end_reason"] == "replaced"


def test_a_cluster_is_shown_by_its_latest_play_of_the_alert():
    """A receiver that finished an alert, restarted and joined it again is playing, not finished."""
    from controller.services.emergencies import cluster_state

    running = Alert(id="al-x", status="running", started_ms=1, ended_ms=None)
    started = {"type": "playback.started", "ts": 10}
    finished = {"type": "playback.finished", "ts": 20, "end_reason": "stopped"}
    again = {"type": "playback.started", "ts": 30, "joined": True}
    assert cluster_state([started, finished], True, running) == ("finished", "stopped")
    assert cluster_state([started, finished, again], True, running) == ("playing", None)
    assert cluster_state([{"type": "command.ack", "ts": 5}], False, running) == ("acknowledged", None)
    assert cluster_state([], False, running) == ("offline", "offline")
    assert cluster_state([], True, running) == ("waiting", None)


def test_live_views_beyond_the_cap_get_one_snapshot_and_come_back_later(fleet, client, monkeypatch):
    """Phones left open on a live view must not take every web thread: past the cap, one snapshot, retry in 5 s."""
    import threading

    from controller.pages import alerts as alert_pages

    with session_scope(fleet) as db:
        db.add(Alert(id="al-open-1", mode="live", status="running", title="Lũ", area_id="qd/phu",
                     targets='{"areas": ["qd/phu"], "receivers": []}', scopes='["area/qd/phu"]',
                     target_rx='["phu-1"]', content_kind="text", text="x", volume=100, chime=True, repeat=1,
                     gap_s=1.0, created_ms=1, started_ms=1, ends_ms=2**50))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "man-qd", "password": "pw-man-qd", "csrf_token": csrf})
    monkeypatch.setattr(alert_pages, "_streams", threading.BoundedSemaphore(1))
    assert alert_pages._streams.acquire(blocking=False)  # the one stream allowed is taken
    body = client.get("/alerts/al-open-1/events").get_data(as_text=True)
    assert body.startswith("retry: 5000") and body.count("event: status") == 1 and '"total": 1' in body
