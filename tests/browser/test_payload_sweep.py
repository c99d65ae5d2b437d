"""Script payloads in every text anyone can write, then every page opened in Chromium.

Users (titles, names, session and extra-session names, TTS text, file names, reject
reasons, acknowledgement notes, token names), API clients and receivers (fault codes and
reasons, heartbeat fields, end reasons, failure codes) write the payloads through the
product's own paths: the HTTP API and the telemetry ingest a receiver's broker login
feeds. Then every GET page of the URL map (new pages are included automatically; a rule
this test cannot fill fails it), the print view and the CSV are opened as the district
admin. The test fails if a payload runs (or is even parsed into an element and only
blocked by the Content-Security-Policy), if any page answers 500, or if a CSV cell begins
with a formula character.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import requests

from controller.db import session_scope
from controller.models import Fault, Receiver
from controller.services.telemetry import Telemetry
from schedules import events, topics
from schedules.events import now_ms

from helpers import tone, wait_until
from web_support import login

ADMIN = ("admin", "pw-admin")
MARK = "xss" + uuid.uuid4().hex[:6]
PAYLOADS = [
    f'"><img src=x onerror=window.{MARK}=1>',
    f"<script>window.{MARK}=2</script>",
    "{{7*7}} {% raw %} %s %(x)s 100%",
    f"=HYPERLINK(\"http://evil.example/{MARK}\")",
]
PAYLOAD = "".join(PAYLOADS[:3])  # one text with them all (session names allow 100 characters)
# Elements a payload would have become: handlers, the img, executable scripts naming the mark
# (application/json blocks are data, escaped by |tojson).
INJECTED = """mark => [...document.querySelectorAll('[onerror], img[src="x"]')].map(e => e.outerHTML)
  .concat([...document.scripts].filter(s => s.type !== 'application/json' && s.textContent.includes(mark))
  .map(s => s.outerHTML.slice(0, 300)))"""
SKIP_RULES = {"/static/<path:filename>", "/media/<name>", "/lang/<code>", "/login",  # files; redirect; no data
              "/alerts/<alert_id>/events"}  # an event stream, not a page: its JSON is what /alerts/<id> renders


def _api(base: str, method: str, path: str, **kw) -> requests.Response:
    resp = requests.request(method, base + "/api/v1" + path, auth=ADMIN, timeout=30, **kw)
    assert resp.status_code < 500, (method, path, resp.status_code, resp.text[:300])
    return resp


def _write_everything(app, tmp_path) -> dict[str, str]:
    """Payloads in through every writable text; returns ids for the URL map's parameters."""
    base = app.config["PUBLIC_URL"]
    tz = ZoneInfo(app.config["TIMEZONE"])
    tomorrow = (datetime.now(tz) + timedelta(days=1)).date()
    assert _api(base, "POST", "/areas", json={"id": "qd/xss", "name": PAYLOAD, "level": "commune",
                                              "parent": "qd"}).status_code == 201
    _api(base, "PATCH", "/areas/qd/phu", json={"name": "Quảng Phú " + PAYLOADS[1]})
    _api(base, "PUT", "/areas/qd/phu/sessions", json={"sessions": [
        {"key": "sang", "name": PAYLOAD[:100], "start": "06:00", "end": "07:00", "weekdays": list(range(7))},
        {"key": "chieu", "name": PAYLOADS[0], "start": "17:00", "end": "18:00", "weekdays": list(range(7))}]})
    _api(base, "POST", "/areas/qd/phu/extra-sessions", json={"date": tomorrow.isoformat(), "key": "bao",
                                                             "name": PAYLOADS[1], "start": "20:00", "end": "20:30"})
    for rx_id, name in (("phu-x", PAYLOAD), ("phu-y", PAYLOADS[3])):
        assert _api(base, "POST", "/receivers", json={"id": rx_id, "area": "qd/phu", "name": name}).status_code < 300
    _api(base, "POST", "/tokens", json={"name": PAYLOAD})
    _api(base, "POST", "/users", json={"username": "xss-user", "password": "pw-xss-user-1", "role": "operator",
                                       "area": "qd/phu"})
    src = tone(tmp_path / "x.wav", 1)
    with src.open("rb") as fh:
        up = _api(base, "POST", "/bulletins", data={"title": PAYLOAD, "area": "qd/phu"},
                  files={"file": (PAYLOAD + ".wav", fh, "audio/wav")})
    assert up.status_code == 202, up.text
    bid = up.json()["bulletin"]["id"]
    with src.open("rb") as fh:
        _api(base, "POST", "/bulletins", data={"title": PAYLOADS[3], "area": "qd/phu"},
             files={"file": ("=cmd|' /C calc'!A0.wav", fh, "audio/wav")})
    _api(base, "POST", "/bulletins/tts", json={"title": PAYLOADS[1], "area": "qd/phu", "text": PAYLOAD})
    wait_until(lambda: _api(base, "GET", f"/bulletins/{bid}").json()["bulletin"]["status"] == "ready", timeout=60,
               what="the hostile upload to be ready")
    made = [_api(base, "POST", "/programme/items", json={"bulletin_id": bid, "area": "qd/phu", "mode": "once",
                                                          "date": tomorrow.isoformat(), "at": at,
                                                          "title": PAYLOAD}).json()
            for at in ("06:10", "06:20")]
    item_ids = [m["item"]["id"] for m in made if "item" in m]
    if item_ids:
        _api(base, "POST", f"/programme/items/{item_ids[-1]}/reject", json={"reason": PAYLOAD})

    # What a receiver's own broker login can send: fault codes and reasons, heartbeat fields,
    # end reasons and failure codes (through the same ingest the MQTT link feeds).
    tele = Telemetry(app)
    rx = "phu-x"
    tele.handle(topics.rx_status(rx), b"online")
    tele.handle(topics.rx_hb(rx), events.encode({"v": 1, "rx": rx, "ts": now_ms(), "version": PAYLOAD,
                                                  "playing": PAYLOAD, "network": {"operator": PAYLOAD,
                                                                                  "tech": PAYLOADS[0]},
                                                  "manifests": {PAYLOAD: 1}, "disk": PAYLOAD}))
    start = now_ms() - 120_000
    occurrence = f"pi-{item_ids[0] if item_ids else 1}@{start}"
    for type_, fields in (
            ("fault.raised", {"fault": PAYLOAD, "reason": PAYLOAD}),
            ("fault.raised", {"fault": "overheating", "reason": PAYLOAD}),
            ("playback.started", {"item_id": occurrence, "scope": PAYLOAD, "planned_start_ms": start}),
            ("playback.finished", {"item_id": occurrence, "end_reason": PAYLOAD, "played_ms": 1000,
                                   "planned_duration_ms": 1000, "scope": PAYLOAD}),
            ("playback.failed", {"item_id": occurrence, "code": PAYLOAD, "reason": PAYLOAD}),
            ("manifest.refused", {"code": PAYLOAD, "scope": PAYLOAD, "reason": PAYLOAD})):
        ev = {"v": 1, "id": uuid.uuid4().hex, "rx": rx, "ts": now_ms(), "type": type_, **fields}
        tele.handle(topics.rx_events(rx), events.encode(ev))
    with session_scope(app) as db:
        fault_ids = [f.id for f in db.query(Fault).filter(Fault.rx_id == rx)]
        assert db.get(Receiver, rx).last_hb
    for fid in fault_ids:
        _api(base, "POST", f"/faults/{fid}/ack", json={"note": PAYLOAD})
    # Emergency broadcasts: a prepared text, a saved stream and a running alert, all named by the payloads.
    assert _api(base, "POST", "/alert-templates", json={"area": "qd/phu", "topic": "other", "name": PAYLOAD,
                                                        "text": PAYLOADS[1]}).status_code == 201
    assert _api(base, "POST", "/stream-sources", json={"area": "qd/phu", "name": PAYLOAD,
                                                       "url": "https://vov.example/1"}).status_code == 201
    alert = _api(base, "POST", "/alerts", json={"mode": "drill", "areas": ["qd/phu"], "title": PAYLOAD,
                                                "content": {"kind": "stream", "url": "https://vov.example/1"}})
    assert alert.status_code == 202, alert.text
    return {"rx_id": rx, "item_id": str(item_ids[0]) if item_ids else "1", "fault_id": str(fault_ids[0]),
            "area_id": "qd/phu", "bulletin_id": str(bid), "alert_id": alert.json()["alert"]["id"]}


def _page_urls(app, ids: dict[str, str]) -> list[str]:
    """Every GET page of the URL map with its parameters filled, plus the views with query strings."""
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.rule.startswith("/api/") or rule.rule in SKIP_RULES:
            continue
        path = rule.rule
        for arg in rule.arguments:
            assert arg in ids, f"the payload sweep cannot fill <{arg}> of {rule.rule}: add it to _write_everything"
            path = re.sub(rf"<(?:[^:<>]+:)?{arg}>", ids[arg], path)
        urls.append(path)
    today = datetime.now(ZoneInfo(app.config["TIMEZONE"])).date()
    span = f"from={(today - timedelta(days=7)).isoformat()}&to={(today + timedelta(days=2)).isoformat()}"
    urls += ["/programme?area=qd/phu", "/programme?area=qd/xss", "/clusters?area=qd/phu", "/clusters?q=%3Cscript",
             "/faults?area=qd/phu", f"/reports?area=qd/phu&{span}&outcome=all", f"/reports/print?area=qd/phu&{span}",
             "/bulletins?area=qd/phu", "/admin?area=qd/phu"]
    return sorted(set(urls))


def test_no_payload_runs_on_any_page_and_no_page_fails(live_app, browser, tmp_path):
    app = live_app
    ids = _write_everything(app, tmp_path)
    base = app.config["PUBLIC_URL"]
    ctx = browser.new_context(locale="vi-VN", viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    blocked: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, base, "admin", "pw-admin")
    urls = _page_urls(app, ids)
    assert len(urls) >= 15
    for lang in ("vi", "en"):
        page.goto(f"{base}/lang/{lang}?next=/")
        for url in urls:
            if url.endswith(".csv"):  # a download, not a page: its cells are checked below
                got = page.request.get(base + url)
                assert got.status < 500, (lang, url, got.status)
                continue
            resp = page.goto(base + url)
            assert resp is not None and resp.status < 500, (lang, url, resp and resp.status)
            page.wait_for_load_state("load")
            ran = page.evaluate(f"() => window.{MARK} || null")
            assert ran is None, f"a payload ran on {url} ({lang})"
            # Parsed into an element (and only stopped by the CSP) counts as a failure too.
            parsed = page.evaluate(INJECTED, MARK)
            assert parsed == [], f"a payload became markup on {url} ({lang}): {parsed}"
    assert dialogs == [] and blocked == [], (dialogs, blocked[:3])
    ctx.close()


def test_csv_cells_never_start_a_formula(live_app, tmp_path):
    app = live_app
    _write_everything(app, tmp_path)
    base = app.config["PUBLIC_URL"]
    today = datetime.now(ZoneInfo(app.config["TIMEZONE"])).date()
    s = requests.Session()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', s.get(base + "/login", timeout=10).text).group(1)
    s.post(base + "/login", data={"username": "admin", "password": "pw-admin", "csrf_token": csrf}, timeout=10)
    resp = s.get(base + "/reports/as-run.csv", timeout=30, params={
        "area": "qd", "from": (today - timedelta(days=7)).isoformat(), "to": (today + timedelta(days=2)).isoformat(),
        "outcome": "all"})
    assert resp.status_code == 200, resp.text[:300]
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert len(rows) >= 2, rows
    cells = [c for row in rows[1:] for c in row]
    assert any(MARK in c or "7*7" in c for c in cells)
    bad = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _number(c))]
    assert bad == [], bad


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
