"""Cluster, fault and report pages: what they show, who may see them, forms with CSRF (Flask test client)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from controller.db import session_scope
from controller.models import Fault, FaultAck, HeartbeatBucket, MissedPlay, Receiver
from controller.services import charts, health
from controller.services.telemetry import Telemetry
from schedules import events, topics
from schedules.events import now_ms

ON_BOTH_DATABASES = True  # the dashboards' JSON and date SQL differ between the two


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(client, username, password=None):
    resp = client.post("/login", data={"username": username, "password": password or "pw-" + username,
                                       "csrf_token": _csrf(client.get("/login").text)})
    assert resp.status_code == 302, resp.text
    return client


def _event(rx: str, type_: str, **fields) -> bytes:
    return events.encode(events.make_event(rx, type_, **fields))


@pytest.fixture
def watched(prog):
    """Receivers heard from through the real telemetry path: heartbeats, plays, a fault, a missed play."""
    with session_scope(prog) as db:
        db.get(Receiver, "phu-1").lat, db.get(Receiver, "phu-1").lon = 16.58, 107.50
        db.get(Receiver, "an-1").lat, db.get(Receiver, "an-1").lon = 16.60, 107.45
        db.add(Receiver(id="phu-2", area_id="qd/phu", name="P2 chợ", token_hash="t" * 64, created_ms=0,
                        lat=16.57, lon=107.52))
    tele = Telemetry(prog)
    for n in range(3):
        tele.handle(topics.rx_hb("phu-1"), events.encode({
            "v": 1, "rx": "phu-1", "ts": now_ms(), "uptime_s": 100 + n, "playing": None, "cache_files": 4,
            "disk_free_bytes": 5_000_000_000, "clock_offset_ms": 10 * (n + 1), "temperature_c": 40.0 + n,
            "network": {"rssi_dbm": -70 - n}, "volume": 80, "version": "1.2.0"}))
    tele.handle(topics.rx_hb("an-1"), events.encode({"v": 1, "rx": "an-1", "ts": now_ms(), "uptime_s": 5}))
    occ = "pi-7.20261122.0.qd/phu"
    now = now_ms()
    tele.handle(topics.rx_events("phu-1"), _event("phu-1", events.PLAYBACK_STARTED, item_id=occ,
                                                  planned_start_ms=now - 700_000))
    tele.handle(topics.rx_events("phu-1"), _event("phu-1", events.PLAYBACK_FINISHED, item_id=occ,
                                                  planned_start_ms=now - 700_000, played_ms=600_000,
                                                  planned_duration_ms=600_000, end_reason="media_end"))
    tele.handle(topics.rx_events("phu-1"), _event("phu-1", events.FAULT_RAISED, fault="amplifier_fault",
                                                  reason="relay stuck"))
    tele.handle(topics.rx_events("an-1"), _event("an-1", events.PLAYBACK_FINISHED, item_id="pi-8.20261122.0.qd/an",
                                                 planned_start_ms=now - 700_000, played_ms=150_000,
                                                 planned_duration_ms=600_000, end_reason="preempted"))
    tele.handle(topics.rx_events("an-1"), _event("an-1", events.FAULT_RAISED, fault="mains_power_lost"))
    with session_scope(prog) as db:
        db.add(MissedPlay(occurrence_id=occ, programme_item_id=7, rx_id="phu-2", planned_start_ms=now - 700_000,
                          detected_ms=now))
    return prog


def test_heartbeats_are_kept_in_15_minute_buckets(watched):
    with session_scope(watched) as db:
        rows = db.query(HeartbeatBucket).filter_by(rx_id="phu-1").all()
        assert len(rows) == 1  # three beats, one bucket (unless the test straddled a boundary)
        row = rows[0]
        assert row.beats == 3 and row.bucket_ms % health.BUCKET_MS == 0
        assert (row.offset_min, row.offset_max, row.offset_sum / row.offset_n) == (10, 30, 20)
        assert (row.temp_max, row.signal_min, row.disk_free_min) == (42.0, -72.0, 5_000_000_000)
        other = db.query(HeartbeatBucket).filter_by(rx_id="an-1").one()
        assert other.beats == 1 and other.offset_n == 0 and other.offset_min is None


def test_cluster_table_filters_sorts_and_hides_other_communes(watched, client):
    _login(client, "man-qd")
    html = client.get("/clusters").text
    assert set(re.findall(r'<tr data-rx="([^"]+)" data-status="(\w+)"', html)) == {
        ("phu-1", "fault"), ("an-1", "fault"), ("phu-2", "offline")}
    assert 'id="count-offline">1<' in html and "<svg" in html and 'data-status="offline"' in html
    assert "leaflet/leaflet.js" in html and "1.2.0" in html and "10 ms" not in html  # offset shown is the latest
    offline = client.get("/clusters?status=offline").text
    assert re.findall(r'<tr data-rx="([^"]+)" data-status', offline) == ["phu-2"]
    by_offset = client.get("/clusters?sort=offset&dir=desc").text
    assert re.findall(r'<tr data-rx="([^"]+)" data-status', by_offset)[0] == "phu-1"
    assert client.get("/clusters?q=ch%E1%BB%A3").text.count('data-status="offline"') >= 1  # "chợ"
    client.post("/logout", data={"csrf_token": _csrf(html)})

    _login(client, "op-an")
    html = client.get("/clusters").text
    assert re.findall(r'<tr data-rx="([^"]+)" data-status', html) == ["an-1"]
    assert client.get("/clusters?area=qd/phu").status_code == 404
    assert client.get("/clusters/phu-1").status_code == 404
    assert client.get("/clusters/nope").status_code == 404
    assert [p["id"] for p in client.get("/clusters/map.json").json["points"]] == ["an-1"]


def test_cluster_detail_has_charts_faults_and_plays(watched, client):
    _login(client, "op-phu")
    html = client.get("/clusters/phu-1").text
    assert "Hỏng bộ khuếch đại" in html and "Có sự cố" in html and "1.2.0" in html
    assert html.count('<svg class="chart"') == 4 and 'fill="#3a86ff"' in html  # one bucket: a dot
    assert "Phát đủ" in html and "Bắt đầu phát" in html
    assert client.get("/clusters/phu-1?range=7d").status_code == 200
    # Volume: checked, CSRF-protected, and honest when there is no broker link.
    assert client.post("/clusters/phu-1/command", data={"action": "volume", "volume": "70"}).status_code == 400
    resp = client.post("/clusters/phu-1/command", data={"action": "volume", "volume": "170",
                                                          "csrf_token": _csrf(html)}, follow_redirects=True)
    assert "Âm lượng phải từ 0 đến 100." in resp.text
    resp = client.post("/clusters/phu-1/command", data={"action": "volume", "volume": "70",
                                                          "csrf_token": _csrf(html)}, follow_redirects=True)
    assert "chưa kết nối" in resp.text


def test_viewer_cannot_send_commands_or_ack(watched, client):
    _login(client, "viewer")
    html = client.get("/clusters/phu-1").text
    assert "Chỉnh âm lượng" not in html
    resp = client.post("/clusters/phu-1/command", data={"action": "resync", "csrf_token": _csrf(html)},
                       follow_redirects=True)
    assert "không có quyền" in resp.text
    with session_scope(watched) as db:
        fid = db.query(Fault).filter_by(rx_id="phu-1").one().id
    resp = client.post(f"/faults/{fid}/ack", data={"csrf_token": _csrf(html)}, follow_redirects=True)
    assert "không có quyền" in resp.text
    with session_scope(watched) as db:
        assert db.get(FaultAck, fid) is None


def test_faults_page_ack_and_scope(watched, client):
    with session_scope(watched) as db:
        fid = db.query(Fault).filter_by(rx_id="phu-1").one().id
        other = db.query(Fault).filter_by(rx_id="an-1").one().id
    _login(client, "op-phu")
    html = client.get("/faults").text
    assert f'data-fault="{fid}"' in html and f'data-fault="{other}"' not in html
    assert 'id="share-chart"' in html and "<svg" in html
    assert client.post(f"/faults/{fid}/ack", data={}).status_code == 400  # no CSRF token
    assert client.post(f"/faults/{other}/ack", data={"csrf_token": _csrf(html)}).status_code == 404
    done = client.post(f"/faults/{fid}/ack", data={"csrf_token": _csrf(html), "back": "/faults?state=acked"},
                       follow_redirects=True)
    assert "Đã tiếp nhận sự cố." in done.text and f'data-fault="{fid}" data-state="acked"' in done.text
    assert "op-phu" in done.text
    with session_scope(watched) as db:
        assert db.get(FaultAck, fid).acked_by is not None
    # Cleared: resolved, with the time to repair.
    Telemetry(watched).handle(topics.rx_events("phu-1"), _event("phu-1", events.FAULT_CLEARED,
                                                                fault="amplifier_fault"))
    html = client.get("/faults?state=resolved").text
    assert f'data-fault="{fid}" data-state="resolved"' in html
    assert client.get("/faults?area=qd/an").status_code == 404


def test_reports_page_csv_and_print(watched, client):
    _login(client, "man-qd")
    html = client.get("/reports").text
    assert 'id="n-full">1<' in html and 'id="n-partial">1<' in html and 'id="n-missed">1<' in html
    assert "Bị bản tin ưu tiên hơn chen ngang" in html and "25%" in html
    assert "Cụm mất kết nối lúc phát" in html  # phu-2 never beat
    # The log per item and receiver: problems by default, every outcome on request, one outcome alone.
    def rows(query: str) -> list[str]:
        table = client.get("/reports" + query).text.split('id="problems"')[1].split("</table>")[0]
        return re.findall(r'<tr class="outcome-(\w+)"', table)

    assert sorted(rows("")) == ["missed", "partial"]
    assert sorted(rows("?outcome=all")) == ["full", "missed", "partial"]
    assert rows("?outcome=full") == ["full"] and rows("?outcome=bogus") == rows("")
    client.get("/lang/en")
    english = client.get("/reports?outcome=all").text
    assert "Played fully" in english and "Pre-empted by a higher-priority bulletin" in english
    assert "Phát đủ" not in english
    client.get("/lang/vi")
    csv_text = client.get("/reports/as-run.csv").data.decode("utf-8-sig")
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("occurrence_id,") and len(lines) == 4
    assert any(",partial," in line and ",25," in line for line in lines)
    printed = client.get("/reports/print?period=week").text
    assert "Báo cáo kết quả phát thanh" in printed and "Tuần" in printed and "csrf" not in printed.lower()
    assert 'id="error"' in client.get("/reports?from=32/13/2026").text
    client.post("/logout", data={"csrf_token": _csrf(html)})

    _login(client, "op-an")
    html = client.get("/reports").text
    assert 'id="n-full">0<' in html and 'id="n-partial">1<' in html and 'id="n-missed">0<' in html
    assert client.get("/reports?area=qd/phu").status_code == 404
    assert client.get("/reports/as-run.csv?area=qd/phu").status_code == 404
    assert client.get("/reports/print?area=qd/phu").status_code == 404
    assert len(client.get("/reports/as-run.csv").data.decode("utf-8-sig").strip().splitlines()) == 2


@pytest.mark.parametrize("path", ["/clusters", "/clusters/phu-1", "/faults", "/reports", "/reports/print",
                                  "/reports/as-run.csv", "/clusters/map.json"])
def test_pages_need_login(watched, client, path):
    resp = client.get(path)
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_ack_and_command_need_login(watched, client):
    assert client.post("/faults/1/ack").status_code in (302, 400)
    assert client.post("/clusters/phu-1/command").status_code in (302, 400)


def test_history_chart_breaks_on_gaps(watched):
    svg = charts.line_chart([("x", "#000", [(0, 1.0), (health.BUCKET_MS, 2.0), (10 * health.BUCKET_MS, 3.0)])],
                            0, 12 * health.BUCKET_MS, label="t")
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert "Chưa có dữ liệu" in charts.line_chart([("x", "#000", [])], 0, 1, label="t")


def test_coordinate_plot_bins_many_points():
    points = [{"id": f"r{i}", "name": f"R{i}", "lat": 16 + (i % 100) / 1000, "lon": 107 + (i // 100) / 1000,
               "status": "ok" if i % 7 else "offline"} for i in range(5000)]
    svg = str(charts.coordinate_plot(points))
    assert "data-rx" not in svg and 'data-status="offline"' in svg and len(svg) < 400_000
    assert json.dumps(points[:1])  # plain data in, SVG out


def test_working_share_comes_from_area_activity(watched):
    from controller.models import AreaActivity

    now = now_ms()
    bucket = now - now % health.BUCKET_MS
    with session_scope(watched) as db:
        assert sum(a.working for a in db.query(AreaActivity).all()) == 2  # phu-1 and an-1, once each
        share = health.working_share(db, {"qd", "qd/phu", "qd/an"}, bucket, now + 1, health.BUCKET_MS)
        assert share == [(bucket, pytest.approx(2 / 3))]
        assert health.working_share(db, {"qd/phu"}, bucket, now + 1, health.BUCKET_MS)[0][1] == pytest.approx(0.5)
        assert health.working_share(db, {"hue"}, bucket, now + 1) == []  # no receivers there


def test_cluster_table_sorts_by_status_and_heartbeat_fields(watched):
    with session_scope(watched) as db:
        visible = {"qd", "qd/phu", "qd/an"}
        by_status = health.clusters(db, visible, now_ms(), sort="status", desc=True)
        assert by_status.rows[0]["id"] == "phu-2"  # offline first when descending
        by_version = health.clusters(db, visible, now_ms(), sort="version")
        assert [r["id"] for r in by_version.rows][0] == "phu-1"  # the only one reporting a version
        assert by_version.rows[-1]["version"] is None
        paged = health.clusters(db, visible, now_ms(), per_page=2, page=9)
        assert paged.page == 2 and paged.pages == 2 and len(paged.rows) == 1


def test_as_run_records_fold_events_incrementally(watched):
    from controller.models import AsRunRecord
    from controller.services import reports

    tele = Telemetry(watched)
    occ = "pi-9.20261122.0.qd/phu"
    with session_scope(watched) as db:
        reports.refresh(db)
        reports.refresh(db)  # twice changes nothing
        assert {(r.rx_id, r.outcome) for r in db.query(AsRunRecord).all()} == {("phu-1", "full"), ("an-1", "partial")}
    tele.handle(topics.rx_events("phu-2"), _event("phu-2", events.PLAYBACK_STARTED, item_id=occ,
                                                  planned_start_ms=now_ms()))
    with session_scope(watched) as db:
        reports.refresh(db)
        assert db.query(AsRunRecord).filter_by(occurrence_id=occ).one().outcome == "unfinished"
    tele.handle(topics.rx_events("phu-2"), _event("phu-2", events.PLAYBACK_FINISHED, item_id=occ,
                                                  planned_start_ms=now_ms(), played_ms=5000,
                                                  planned_duration_ms=10_000, end_reason="stopped"))
    with session_scope(watched) as db:
        reports.refresh(db)
        row = db.query(AsRunRecord).filter_by(occurrence_id=occ).one()
        assert (row.outcome, row.played_ms, row.reason, row.area_id) == ("partial", 5000, "stopped", "qd/phu")
        reports.refresh(db)  # the start, seen again in the overlap, does not undo the finish
        assert db.query(AsRunRecord).filter_by(occurrence_id=occ).one().outcome == "partial"
        assert db.query(AsRunRecord).count() == 3


@pytest.mark.parametrize("path", [
    "/clusters?page=abc&per_page=-4&sort=drop&dir=sideways&status=%00", "/clusters?q=%25%27%22",
    "/clusters/phu-1?range=forever", "/faults?page=0&state=weird&days=x", "/reports?from=abc&to=31/02/2026",
    "/reports?from=2026-11-20&to=2026-11-01&period=century", "/reports?from=2020-01-01&to=2026-11-01",
    "/reports/print?to=bad", "/reports/as-run.csv?from=bad"])
def test_bad_query_strings_give_pages_not_errors(watched, client, path):
    _login(client, "admin")
    resp = client.get(path)
    assert resp.status_code == 200 and "Traceback" not in resp.text


def test_report_dates_are_read_and_shown_as_dd_mm_yyyy(watched, client):
    # The month asked for is the one the fixture's plays fell in (700 s ago), never a fixed calendar month.
    played = datetime.fromtimestamp((now_ms() - 700_000) / 1000, ZoneInfo("Asia/Ho_Chi_Minh")).date()
    first = played.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    _login(client, "admin")
    html = client.get(f"/reports?from={first:%d/%m/%Y}&to={last:%d/%m/%Y}&period=month").text
    assert f"Từ {first:%d/%m/%Y} đến {last:%d/%m/%Y}" in html and f'value="{first:%d/%m/%Y}"' in html
    assert f"Tháng {first:%m/%Y}" in html
    # A month in which nothing played lists no hours for it.
    html = client.get("/reports?from=01/02/2020&to=29/02/2020&period=month").text
    assert "Từ 01/02/2020 đến 29/02/2020" in html and "Tháng 02/2020" not in html


def test_broadcast_time_labels_never_round_a_play_to_nothing(app):
    from controller.pages.common import _hours_label

    with app.test_request_context("/reports"):
        assert [_hours_label(h) for h in (2.5, 0.25, 20 / 3600)] == ["2.5 giờ", "15 phút", "20 giây"]


def test_overview_shows_each_area_with_its_clusters_sessions_and_faults(watched, client):
    _login(client, "man-qd")
    html = client.get("/").text
    rows = dict(re.findall(r'<tr data-area="([^"]+)">(.*?)</tr>', html, re.S))
    assert list(rows) == ["qd", "qd/an", "qd/phu"]  # the district first, then its communes
    counts = {a: re.search(r'data-ok="(\d+)" data-fault="(\d+)" data-offline="(\d+)"', r).groups()
              for a, r in rows.items()}
    # phu-1 and an-1 beat and have an open fault each; phu-2 never beat.
    assert counts == {"qd": ("0", "2", "1"), "qd/an": ("0", "1", "0"), "qd/phu": ("0", "1", "1")}
    assert 'href="/faults?area=qd/phu">1<' in rows["qd/phu"] and 'href="/faults?area=qd">2<' in rows["qd"]
    assert 'id="fault-count">2<' in html
    if datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).weekday() < 6:  # communes broadcast Monday to Saturday
        assert "Buổi sáng 05:30–06:30" in rows["qd/phu"] and "Buổi chiều 17:00–18:00" in rows["qd/phu"]
    _login(client, "op-an")
    assert re.findall(r'<tr data-area="([^"]+)">', client.get("/").text) == ["qd/an"]
