"""What the system shows must be what happened: missed-play reasons from the presence history,
a filled and formula-safe as-run CSV, the overview's past plays from the as-run record, airtime
summed and shown exactly, and plays joined under way marked as such.

Every time is fixed (``T``); the pages' clocks are set with ``monkeypatch`` as the programme
tests do, and report ranges are asked for explicitly, never "today".
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from controller.db import session_scope
from controller.models import Event, HeartbeatBucket, MissedPlay, Presence, ProgrammeItem, Receiver
from controller.services import asrun, reports
from controller.services.health import BUCKET_MS
from schedules import vocab

from helpers import basic

ON_BOTH_DATABASES = True  # the fold and the presence queries are SQL that differs between the two

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
T = int(datetime(2026, 11, 22, 9, 0, tzinfo=TZ).timestamp() * 1000)  # a play's planned start
DAY = "22/11/2026"
VISIBLE = {"hue", "qd", "qd/phu", "qd/an"}


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(client, username):
    resp = client.post("/login", data={"username": username, "password": "pw-" + username,
                                       "csrf_token": _csrf(client.get("/login").text)})
    assert resp.status_code == 302, resp.text
    return client


def _event(db, rx: str, type_: str, ts: int, item_id: str | None = None, **fields) -> None:
    body = {"v": 1, "id": str(uuid.uuid4()), "rx": rx, "ts": ts, "type": type_, **fields}
    if item_id:
        body["item_id"] = item_id
    db.add(Event(id=body["id"], rx_id=rx, ts_ms=ts, type=type_, item_id=item_id,
                 programme_item_id=int(item_id.split(".")[0][3:]) if item_id else None,
                 body=json.dumps(body), received_ms=ts + 50))


def _item(db, item_id: int, title: str, duration_ms: int = 600_000, area: str = "qd/phu") -> None:
    db.add(ProgrammeItem(id=item_id, title=title, area_id=area, bulletin_id=1, duration_ms=duration_ms,
                         created_ms=0, status="approved", mode="once", start_ms=T))


def _rx(db, rx_id: str, name: str | None = None, created_ms: int = 0, area: str = "qd/phu") -> None:
    db.add(Receiver(id=rx_id, area_id=area, name=name or rx_id, token_hash=uuid.uuid4().hex * 2,
                    created_ms=created_ms))


def _presence(db, rx: str, *changes: tuple[int, bool]) -> None:
    for since, online in changes:
        db.add(Presence(rx_id=rx, online=online, since_ms=since))


def _csv_rows(app, since: int, until: int) -> list[dict[str, str]]:
    with session_scope(app) as db:
        reports.refresh(db)
        text = "".join(reports.csv_lines(db, VISIBLE, since, until, TZ))
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


# ----------------------------------------------------------------- 1. why a play was missed


@pytest.fixture
def misses(prog):
    """One 10-minute play at T missed by receivers whose presence differs; ``off`` beat 2 minutes before."""
    occ = "pi-41.20261122.0.qd/phu"
    hour = 3600_000
    with session_scope(prog) as db:
        _item(db, 41, "Tin sáng")
        for rx in ("off", "silent", "late", "drop", "fresh", "unreg", "never"):
            _rx(db, rx, created_ms=T + 1 if rx == "unreg" else 0)
        db.flush()
        _presence(db, "off", (T - hour, True), (T - 60_000, False))  # the will fired a minute before
        _presence(db, "silent", (T - hour, True))
        _presence(db, "late", (T - hour, False), (T + 120_000, True))  # back 2 min into the play
        _presence(db, "drop", (T - hour, True), (T + 60_000, False))
        _presence(db, "fresh", (T - hour, True))
        _presence(db, "unreg", (T - hour, True))
        for rx in ("off", "silent", "late", "drop", "unreg"):
            _event(db, rx, "manifest.accepted", T - hour + 1000, scope="area/qd/phu", version=3, items=1)
        # A beat inside the 15 minutes before the start: the old rule took that for "online".
        db.add(HeartbeatBucket(rx_id="off", bucket_ms=(T - 120_000) // BUCKET_MS * BUCKET_MS, beats=4))
        for rx in ("off", "silent", "late", "drop", "fresh", "unreg", "never"):
            db.add(MissedPlay(occurrence_id=occ, programme_item_id=41, rx_id=rx, planned_start_ms=T,
                              detected_ms=T + 700_000))
    return prog


def test_a_missed_play_says_why_from_the_presence_history(misses):
    with session_scope(misses) as db:
        rows, total = reports.problem_rows(db, VISIBLE, T - 1, T + 1)
    rows = [r for r in rows if r["outcome"] == "missed"]
    assert total == len(rows) == 7
    assert {r["rx_id"]: r["reason"] for r in rows} == {
        "off": "offline",  # offline through the whole play, heartbeat or not
        "silent": "no_start",
        "late": "came_online",
        "drop": "went_offline",
        "fresh": "no_manifest",
        "unreg": "not_provisioned",
        "never": "offline",  # never connected
    }
    assert all(r["reason_vi"] for r in rows)


def test_every_miss_reason_is_in_the_vocabulary_and_has_a_label():
    assert vocab.MISS_REASONS <= set(reports.REASON_VI)
    assert all(reports.REASON_VI[w] for w in vocab.MISS_REASONS)


def test_the_pages_show_the_presence_reason(misses, client, monkeypatch):
    monkeypatch.setattr("controller.pages.common.now_ms", lambda: T + 3600_000)
    _login(client, "man-qd")
    html = client.get(f"/reports?from={DAY}&to={DAY}").text
    row = re.search(r'<tr class="outcome-missed" data-rx="off">(.*?)</tr>', html, re.S).group(1)
    assert "Cụm mất kết nối lúc phát" in row and "không báo bắt đầu" not in row
    assert "Cụm kết nối lại khi bản tin đang phát nhưng không phát" in html
    assert "Cụm chưa nhận lịch phát nào" in html
    cluster = client.get("/clusters/off").text
    assert "Cụm mất kết nối lúc phát" in cluster and "Cụm trực tuyến nhưng không báo" not in cluster


# ----------------------------------------------------------------- 2. the CSV


def test_csv_fills_missed_reasons_and_neutralises_formulas(misses):
    occ = "pi-42.20261122.0.qd/an"
    with session_scope(misses) as db:
        _item(db, 42, '=HYPERLINK("http://evil")', duration_ms=60_000, area="qd/an")
        db.get(Receiver, "an-1").name = "@SUM(A1)"
        _rx(db, "an-2", name="-2+3", area="qd/an")
        _rx(db, "an-3", name="\tcmd", area="qd/an")
        db.flush()
        _event(db, "an-1", "playback.started", T, occ, planned_start_ms=T, actual_start_ms=T, offset_ms=0)
        _event(db, "an-1", "playback.finished", T + 20_000, occ, planned_start_ms=T, played_ms=20_000,
               planned_duration_ms=60_000, offset_ms=0, end_reason="preempted")
        for rx in ("an-2", "an-3"):
            db.add(MissedPlay(occurrence_id=occ, programme_item_id=42, rx_id=rx, planned_start_ms=T,
                              detected_ms=T + 100_000))
    rows = _csv_rows(misses, T - 1, T + 1)
    assert list(rows[0])[-4:] == ["reason", "reason_vi", "late_join_s", "broadcast"]
    assert {r["broadcast"] for r in rows} == {"programme"}
    by_rx = {r["receiver"]: r for r in rows}
    # Every missed row says why, as a code and in Vietnamese.
    missed = [r for r in rows if r["outcome"] == "missed"]
    assert len(missed) == 9 and all(r["reason"] in vocab.MISS_REASONS and r["reason_vi"] for r in missed)
    assert (by_rx["off"]["reason"], by_rx["off"]["reason_vi"]) == ("offline", "Cụm mất kết nối lúc phát")
    assert by_rx["silent"]["reason_vi"] == "Cụm trực tuyến nhưng không báo bắt đầu phát"
    # Text cells that a spreadsheet would run as formulas start with a quote; numbers stay numbers.
    played = by_rx["an-1"]
    assert played["title"] == '\'=HYPERLINK("http://evil")' and played["receiver_name"] == "'@SUM(A1)"
    assert by_rx["an-2"]["receiver_name"] == "'-2+3" and by_rx["an-3"]["receiver_name"] == "'\tcmd"
    assert (played["played_s"], played["planned_s"], played["played_pct"]) == ("20.0", "60.0", "33")
    assert played["reason"] == "preempted" and played["reason_vi"] == "Bị bản tin ưu tiên hơn chen ngang"
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())


# ----------------------------------------------------------------- 3. the overview


@pytest.mark.parametrize(("played", "missed", "expected", "now", "state"), [
    (0, 0, 3, T - 1, "scheduled"), (1, 0, 3, T + 1, "playing"), (3, 0, 3, T + 600_000, "played"),
    (2, 0, 3, T + 600_000, "partial"), (0, 3, 3, T + 600_000, "missed"), (0, 0, 3, T + 600_000, "not_played"),
    (0, 0, 0, T + 600_000, "no_receivers"), (4, 0, 3, T + 600_000, "played"),
    # Without ``expected`` (the programme timeline): any finish counts, as it always has.
    (1, 0, None, T + 600_000, "played"), (0, 2, None, T + 600_000, "missed"), (0, 0, None, T + 1, "playing"),
])
def test_play_state_follows_the_as_run_record(played, missed, expected, now, state):
    assert asrun.play_state(T, 600_000, played, missed, now, expected) == state


def test_overview_colours_past_plays_by_what_the_clusters_played(prog, client, monkeypatch):
    with session_scope(prog) as db:
        _rx(db, "phu-2")
        _rx(db, "phu-3")
        db.get(Receiver, "an-1").retired_ms = 1  # qd/an has no receiver left
    occ = {}
    for key, start, area, bulletin in (("none", T - 3 * 3600_000, "qd/phu", 1), ("some", T - 2 * 3600_000, "qd/phu", 1),
                                       ("all", T - 3600_000, "qd/phu", 1), ("empty", T - 3600_000, "qd/an", 2)):
        monkeypatch.setattr("controller.api.programme.now_ms", lambda start=start: start)
        resp = client.post("/api/v1/programme/items", json={"bulletin_id": bulletin, "area": area, "start_ms": start},
                           headers=basic("admin", "pw-admin"))
        assert resp.status_code == 201, resp.text
        occ[key] = resp.json["item"]["occurrences"][0]
    with session_scope(prog) as db:
        for key, rxs in (("some", ("phu-1", "phu-2")), ("all", ("phu-1", "phu-2", "phu-3"))):
            for rx in rxs:
                _event(db, rx, "playback.finished", T - 1000, occ[key], played_ms=600_000,
                       planned_duration_ms=600_000, end_reason="complete")
    monkeypatch.setattr("controller.pages.common.now_ms", lambda: T)
    _login(client, "admin")
    html = client.get("/").text
    cells = {k: re.search(rf'<tr data-item="{re.escape(o)}">(.*?)</tr>', html, re.S).group(1) for k, o in occ.items()}
    assert 'data-state="not_played"' in cells["none"] and "Không cụm nào phát" in cells["none"]
    assert 'data-state="partial"' in cells["some"] and "2/3" in cells["some"]
    assert 'data-state="played"' in cells["all"] and "Đã qua" in cells["all"] and "3/3" in cells["all"]
    assert 'data-state="no_receivers"' in cells["empty"] and "Không có cụm thu" in cells["empty"]
    assert html.count("Đã qua") == 1  # only the play every cluster played


# ----------------------------------------------------------------- 4. airtime


@pytest.mark.parametrize(("ms", "text"), [
    (20_000, "20 giây"), (65_000, "1 phút 5 giây"), (900_000, "15 phút"), (9_000_000, "2.5 giờ"), (400, "1 giây"),
    (0, "0 giây"), (None, "—"),
])
def test_airtime_words(app, ms, text):
    from controller.labels import airtime

    with app.test_request_context("/"):
        assert airtime(ms) == text


@pytest.fixture
def aired(prog):
    """an-1 played 20 s of one item; phu-1 65 s of another, its finish without ``played_ms``."""
    with session_scope(prog) as db:
        _item(db, 51, "Tin ngắn", duration_ms=20_000, area="qd/an")
        _item(db, 52, "Tin vừa", duration_ms=65_000)
        a, b = "pi-51.20261122.0.qd/an", "pi-52.20261122.0.qd/phu"
        _event(db, "an-1", "playback.started", T, a, planned_start_ms=T, actual_start_ms=T, offset_ms=0)
        _event(db, "an-1", "playback.finished", T + 20_000, a, planned_start_ms=T, played_ms=20_000,
               planned_duration_ms=20_000, offset_ms=0, end_reason="media_end")
        _event(db, "phu-1", "playback.started", T + 10, b, planned_start_ms=T, actual_start_ms=T + 10, offset_ms=0)
        _event(db, "phu-1", "playback.finished", T + 65_010, b, planned_start_ms=T,
               planned_duration_ms=65_000, end_reason="complete")
    return prog


def test_airtime_is_summed_exactly_and_shown_the_same_on_page_and_print(aired, client):
    _login(client, "man-qd")
    page = client.get(f"/reports?from={DAY}&to={DAY}").text
    table = re.search(r'<table id="hours">(.*?)</table>', page, re.S).group(1)
    assert "20 giây" in page and "1 phút 5 giây" in page and "36 giây" not in page
    assert "20 giây" in table and "1 phút 5 giây" in table and "0.01" not in table
    printed = client.get(f"/reports/print?from={DAY}&to={DAY}").text
    table = re.search(r'<table id="hours">(.*?)</table>', printed, re.S).group(1)
    assert "20 giây" in table and "1 phút 5 giây" in table and "0.0" not in table
    with session_scope(aired) as db:
        hours = reports.broadcast_hours(db, VISIBLE, T - 1, T + 1, TZ)
    day = "2026-11-22"
    assert hours["ms"] == {"qd/an": {day: 20_000}, "qd/phu": {day: 65_000}}  # 65 s from start to finish
    assert hours["cluster_ms"]["qd/phu"][day] == 65_000


# ----------------------------------------------------------------- 5. late joins


def test_a_play_joined_late_says_so(prog, client, monkeypatch):
    occ = "pi-61.20261122.0.qd/phu"
    with session_scope(prog) as db:
        _item(db, 61, "Tin một phút", duration_ms=60_000)
        _event(db, "phu-1", "playback.started", T + 30_500, occ, planned_start_ms=T, actual_start_ms=T + 30_500,
               offset_ms=30_000)
        _event(db, "phu-1", "playback.finished", T + 60_000, occ, planned_start_ms=T, played_ms=29_500,
               planned_duration_ms=60_000, offset_ms=30_000, end_reason="media_end")
    with session_scope(prog) as db:
        reports.refresh(db)
        rows, _total = reports.problem_rows(db, VISIBLE, T - 1, T + 1)
    row = next(r for r in rows if r["occurrence_id"] == occ)
    assert (row["outcome"], row["reason"], row.get("late_ms")) == ("partial", "media_end", 30_000)
    csv_row = next(r for r in _csv_rows(prog, T - 1, T + 1) if r["occurrence_id"] == occ)
    assert csv_row["late_join_s"] == "30.0" and csv_row["reason"] == "media_end"
    _login(client, "man-qd")
    html = client.get(f"/reports?from={DAY}&to={DAY}").text
    cell = re.search(r'<tr class="outcome-partial" data-rx="phu-1">(.*?)</tr>', html, re.S).group(1)
    assert "Vào muộn 30 giây" in cell and 'data-late-ms="30000"' in cell
    monkeypatch.setattr("controller.pages.common.now_ms", lambda: T + 3600_000)
    assert "Vào muộn 30 giây" in client.get("/clusters/phu-1").text


def test_a_play_from_the_start_has_no_late_marker(aired):
    with session_scope(aired) as db:
        reports.refresh(db)
        rows, _total = reports.problem_rows(db, VISIBLE, T - 1, T + 1, outcomes=reports.OUTCOMES)
    assert rows and all(r.get("late_ms") is None for r in rows)
