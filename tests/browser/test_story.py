"""A commune's day in a real browser, with real parts (the story of issue 7).

The commune operator records a bulletin through the microphone and puts it into a
session today; the district's area manager has added that session for today, starting
shortly (the test cannot wait for the evening); the commune's approver, a second
person, approves it on the programme page and sees it on today's timeline; a real
receiver process gets the signed manifest and the media and plays the bulletin at the
session's start into its file sink; the operator then sees it played on the reports,
the cluster page and the overview.
"""

from __future__ import annotations

import array
import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from schedules.events import now_ms
from schedules.planner import occurrence_id

from helpers import wait_until
from web_support import ARTIFACTS, login

ADMIN = ("admin", "pw-admin")
OPERATOR = ("op-phu", "pw-op-phu")
MANAGER = ("ql-quangdien", "pw-ql-quangdien")
APPROVER = ("duyet-phu", "pw-duyet-phu")
AREA = "qd/phu"
TITLE = "Thông báo lịch tiêm chủng cho trẻ em"
# The extra session starts this long after it is added: time for the operator to schedule,
# the approver to approve, and the receiver to fetch manifest and media before its 3 s pre-roll.
LEAD_S = 15


def _api(base: str, auth, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, base + "/api/v1" + path, auth=auth, timeout=10, **kw)


def _make_room(base: str, area: str, start: datetime, end: datetime) -> None:
    """Take today off a regular session the extra one would overlap (only when run at 05:30-06:30 or 17-18 h).

    The controller refuses an extra session overlapping a regular one, so the manager moves
    today's regular session aside, as a station would on a day of special broadcasts.
    """
    sessions = _api(base, MANAGER, "GET", f"/areas/{area}/sessions").json()["sessions"]
    weekday, changed = start.weekday(), False
    kept = []
    for s in sessions:
        s_start, s_end = (datetime.combine(start.date(), datetime.strptime(s[k], "%H:%M").time(), start.tzinfo)
                          for k in ("start", "end"))
        if weekday in s["weekdays"] and s_start < end and start < s_end:
            s = {**s, "weekdays": [d for d in s["weekdays"] if d != weekday]}
            changed = True
        if s["weekdays"]:
            kept.append(s)
    if changed:
        resp = _api(base, MANAGER, "PUT", f"/areas/{area}/sessions", json={"sessions": kept})
        assert resp.status_code == 200, resp.text


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_a_communes_day_from_the_microphone_to_the_as_run_report(live_app, receiver, mic_browser, page):
    base = live_app.config["PUBLIC_URL"]
    tz = ZoneInfo(live_app.config["TIMEZONE"])
    _proc, sink_dir, rx_log = receiver

    # District IT gives the district a manager and the commune an approver; the commune wants
    # what goes on air approved by someone other than its author.
    for (username, password), role, area in ((MANAGER, "manager", "qd"), (APPROVER, "approver", AREA)):
        resp = _api(base, ADMIN, "POST", "/users",
                    json={"username": username, "password": password, "role": role, "area": area})
        assert resp.status_code == 201, resp.text
    resp = _api(base, MANAGER, "PATCH", f"/areas/{AREA}", json={"require_distinct_approver": True})
    assert resp.status_code == 200, resp.text
    wait_until(lambda: _api(base, ADMIN, "GET", "/receivers/phu-1").json()["receiver"]["online"], timeout=30,
               what=f"receiver phu-1 online (log: {rx_log})")

    # 1. The operator records a bulletin with the microphone and watches the progress bar finish.
    operator_ctx = mic_browser.new_context(viewport={"width": 1366, "height": 900}, locale="vi-VN")
    operator_ctx.grant_permissions(["microphone"], origin=base)
    op = operator_ctx.new_page()
    ap = page  # the approver works on another computer (a failed test keeps its screenshot)
    try:
        login(op, base, *OPERATOR)
        op.click("header >> text=Bản tin")
        op.locator("#upload-form input[name=title]").fill(TITLE)
        op.click("#rec")
        op.wait_for_function("() => document.querySelector('#rec').classList.contains('on')")
        op.wait_for_timeout(3000)  # the operator speaks for three seconds
        op.click("#rec")
        op.wait_for_function("() => document.querySelector('#upload-progress').value == 100", timeout=60_000)
        assert "Sẵn sàng" in op.locator("#upload-status").inner_text()
        bulletin = next(b for b in _api(base, OPERATOR, "GET", "/bulletins").json()["bulletins"]
                        if b["title"] == TITLE)
        assert bulletin["status"] == "ready", bulletin
        duration_ms = bulletin["media"]["duration_ms"]
        assert 2000 < duration_ms < 6000, bulletin

        # The area manager adds a session for today that starts shortly (no UI for extra sessions yet).
        start = datetime.fromtimestamp(now_ms() // 1000 + LEAD_S + 1, tz)
        end = min(start + timedelta(minutes=10), start.replace(hour=23, minute=59, second=59))
        if (end - start).total_seconds() < 60:
            pytest.skip("too close to midnight for a session today")
        _make_room(base, AREA, start, end)
        resp = _api(base, MANAGER, "POST", f"/areas/{AREA}/extra-sessions",
                    json={"date": start.date().isoformat(), "key": "bo-sung", "name": "Buổi bổ sung",
                          "start": start.strftime("%H:%M:%S"), "end": end.strftime("%H:%M:%S")})
        assert resp.status_code == 201, resp.text
        start_ms = int(start.timestamp() * 1000)

        # The operator puts the bulletin into that session with the list's "Xếp lịch" control.
        op.reload()
        row = op.locator("#bulletins tbody tr", has_text=TITLE)
        row.locator('.session option[value="bo-sung"]').wait_for(state="attached")
        assert row.locator(".day").input_value() == start.date().isoformat()
        row.locator(".session").select_option("bo-sung")
        row.locator("button.schedule").click()
        wait_until(lambda: "chờ duyệt" in row.locator(".status").inner_text(), timeout=10,
                   what="the item scheduled as a draft")
        _screenshot(op, "story-1-bulletins.png")
        item = next(i for i in _api(base, OPERATOR, "GET", "/programme/items").json()["items"]
                    if i["bulletin"] == bulletin["id"])
        assert (item["status"], item["session"], item["date"]) == ("draft", "bo-sung", start.date().isoformat())
        occurrence = occurrence_id(item["id"], AREA, start.date(), 0)

        # 2. The approver approves it on the programme page and sees it on today's timeline.
        login(ap, base, *APPROVER)
        ap.click("header >> text=Chương trình phát")
        draft = ap.locator(f'#drafts tr[data-item="{item["id"]}"]')
        assert TITLE in draft.inner_text() and "Buổi bổ sung" in draft.inner_text()  # the session's name, not its key
        draft.locator("text=Duyệt").click()
        ap.wait_for_load_state()
        assert ap.locator("#message").inner_text() == "Đã duyệt."
        assert ap.locator(f'#timeline .it[data-occurrence="{occurrence}"]').count() == 1
        listed = ap.locator(f'#items tr[data-occurrence="{occurrence}"]')
        assert start.strftime("%d/%m/%Y %H:%M:%S") in listed.inner_text() and "Trong lịch" in listed.inner_text()
        _screenshot(ap, "story-2-programme.png")

        # 3. The receiver holds the item before the session begins, then plays it at the session's start.
        def accepted():
            events = _api(base, ADMIN, "GET", "/receivers/phu-1").json()["receiver"]["events"]
            return [e for e in events if e["type"] == "manifest.accepted" and e["scope"] == f"area/{AREA}"
                    and e["items"] > 0]

        held = wait_until(accepted, timeout=LEAD_S, what=f"the approved item in phu-1's manifest (log: {rx_log})")
        assert min(e["ts"] for e in held) < start_ms, "the manifest came after the session began; raise LEAD_S"
        sidecar = sink_dir / f"{occurrence.replace('/', '_')}-{start_ms}.json"
        meta = wait_until(lambda: sidecar.exists() and (m := json.loads(sidecar.read_text())).get("closed_ms") and m,
                          timeout=LEAD_S + duration_ms / 1000 + 30,
                          what=f"the file sink to record the bulletin (receiver log: {rx_log})")
        assert abs(meta["first_sample_ms"] - start_ms) < 1000, meta  # at the session's start, by its own clock
        pcm = array.array("h")
        pcm.frombytes(sidecar.with_suffix(".pcm").read_bytes())
        rate = meta["sample_rate"]
        assert meta["channels"] == 1
        assert abs(len(pcm) / rate * 1000 - duration_ms) < 150, (len(pcm), duration_ms)
        middle = pcm[rate // 2: rate // 2 + rate]  # one second of the recorded 330 Hz "voice"
        crossings = sum(1 for a, b in zip(middle, middle[1:], strict=False) if (a < 0) != (b < 0))
        assert 600 < crossings < 720, f"expected ~660 zero crossings of 330 Hz, got {crossings}"

        # 4. The operator sees it played: reports, the cluster's as-run log, the overview.
        wait_until(lambda: any(p["item_id"] == occurrence for p in
                               _api(base, ADMIN, "GET", "/receivers/phu-1").json()["receiver"]["played"]),
                   what="playback.finished ingested by the controller")
        op.click("header >> text=Báo cáo")
        report = op.locator(f'#occurrences tr[data-occurrence="{occurrence}"] td')
        assert [report.nth(i).inner_text() for i in range(1, 6)] == [TITLE, "1", "0", "0", "0"]
        assert op.locator("#n-full").inner_text() == "1"
        assert "Không có lượt phát nào có vấn đề." in op.locator("#problems").inner_text()
        _screenshot(op, "story-3-reports.png")
        op.click("header >> text=Cụm loa")
        op.click("text=Phú 1")
        asrun = op.locator("#asrun tr", has_text=occurrence)
        assert "Phát đủ" in asrun.inner_text(), asrun.inner_text()
        _screenshot(op, "story-4-cluster.png")
        op.click("header >> text=Tổng quan")
        on_air = op.locator(f'#programme tr[data-item="{occurrence}"]')
        assert TITLE in on_air.inner_text() and "Đã qua" in on_air.inner_text()
        assert on_air.locator("td.played").inner_text() == "1/1 cụm"
        _screenshot(op, "story-5-overview.png")
    except Exception:
        _screenshot(op, "FAILED-story-operator.png")
        raise
    finally:
        operator_ctx.close()
