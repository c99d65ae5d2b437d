"""Receivers and users write data, never markup.

The vocabulary check, the protocol_violation fault, no `_()` on data.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.db import session_scope
from controller.models import Event, ExtraSessionRow, Fault, Presence, Receiver
from controller.services.telemetry import Telemetry
from schedules import events, topics, vocab

ON_BOTH_DATABASES = True
ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = '"><img src=x onerror=alert(1)><script>alert(2)</script>{{7*7}} %s %(x)s 100%'
GETTEXT_NAMES = {"_", "gettext", "ngettext", "lazy_gettext", "pgettext", "npgettext"}


def _login(client, username):
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    resp = client.post("/login", data={"username": username, "password": "pw-" + username, "csrf_token": csrf})
    assert resp.status_code == 302, resp.text


def _raw_event(rx: str, type_: str, **fields) -> bytes:
    """An event built by hand, as a hostile receiver would, bypassing make_event's own check."""
    ev = {"v": 1, "id": __import__("uuid").uuid4().hex, "rx": rx, "ts": events.now_ms(), "type": type_, **fields}
    return events.encode(ev)


def test_templates_never_translate_data():
    """`_()` in a template takes a literal only: a variable there prints it unescaped (newstyle gettext)."""
    offenders = []
    for path in sorted((ROOT / "controller" / "templates").glob("*.html")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"\b(_|gettext|ngettext)\(\s*([^\s)])", line):
                if m.group(2) not in "\"'":
                    offenders.append(f"{path.name}:{n}: {line.strip()[:100]}")
    assert offenders == []


def test_python_never_translates_data():
    """Every gettext call in the project's Python takes a string literal (the N_ tables are the way to label codes).

    The one exception is controller/labels.py, which translates a table's own literal keys after a membership check.
    """
    offenders = []
    for pkg in ("controller", "audio", "schedules", "receiver"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path == ROOT / "controller" / "labels.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GETTEXT_NAMES:
                    first = node.args[0] if node.args else None
                    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_make_event_refuses_words_outside_the_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        events.make_event("rx", events.FAULT_RAISED, fault="<b>x</b>")
    with pytest.raises(ValueError, match="vocabulary"):
        events.make_event("rx", events.PLAYBACK_FINISHED, end_reason="because")
    assert events.make_event("rx", events.FAULT_RAISED, fault="overheating")["fault"] == "overheating"


def test_receiver_hardware_faults_are_words_of_the_vocabulary():
    from receiver import hardware

    assert set(hardware.FAULT_INPUTS) <= vocab.FAULTS


def test_a_hostile_fault_code_is_stored_as_unknown_and_raises_protocol_violation(prog, client):
    tele = Telemetry(prog)
    tele.handle(topics.rx_events("phu-1"), _raw_event("phu-1", events.FAULT_RAISED, fault=PAYLOAD, reason=PAYLOAD))
    finished = _raw_event("phu-1", events.PLAYBACK_FINISHED, item_id="pi-1.20261122.0.qd/phu",
                          planned_start_ms=events.now_ms() - 60_000, played_ms=10_000,
                          planned_duration_ms=10_000, end_reason=PAYLOAD)
    tele.handle(topics.rx_events("phu-1"), finished)
    tele.handle(topics.rx_events("phu-1"), _raw_event("phu-1", "<script>x</script>", item_id=PAYLOAD))
    with session_scope(prog) as db:
        faults = {f.code: f.detail for f in db.scalars(select(Fault).where(Fault.rx_id == "phu-1"))}
        stored = [(e.type, e.body) for e in db.scalars(select(Event).where(Event.rx_id == "phu-1"))]
    assert set(faults) == {"unknown", vocab.PROTOCOL_VIOLATION}  # one violation fault, kept open once
    assert "onerror" in faults[vocab.PROTOCOL_VIOLATION]  # the raw value is kept, as data
    assert sorted(t for t, _ in stored) == ["fault.raised", "playback.finished", "unknown"]
    assert all('"raw_' in body for _, body in stored)

    _login(client, "admin")
    for url in ("/clusters/phu-1", "/faults", "/reports", "/reports/print", "/reports/as-run.csv"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert "<script>alert" not in resp.text and "<img src=x" not in resp.text, url
    page = client.get("/clusters/phu-1").text
    assert "Cụm thu gửi dữ liệu sai giao thức" in page and "Không rõ (cụm thu gửi mã lạ)" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the detail shown, escaped


def test_a_malformed_event_is_not_stored_and_raises_protocol_violation(prog):
    tele = Telemetry(prog)
    tele.handle(topics.rx_events("phu-1"), _raw_event("phu-1", events.FAULT_RAISED, reason="no fault field"))
    tele.handle(topics.rx_events("phu-1"), b"[[[[" * 10_000)
    with session_scope(prog) as db:
        faults = [(f.code, f.detail) for f in db.scalars(select(Fault).where(Fault.rx_id == "phu-1"))]
        stored = db.scalars(select(Event).where(Event.rx_id == "phu-1")).all()
    assert stored == []
    assert faults == [(vocab.PROTOCOL_VIOLATION,
                       "malformed event: fault.raised event lacks fault (or has another type)")]


def test_operator_written_session_names_are_shown_as_written(prog, client):
    with session_scope(prog) as db:
        day = __import__("datetime").datetime.now(__import__("zoneinfo").ZoneInfo("Asia/Ho_Chi_Minh")).date()
        db.add(ExtraSessionRow(area_id="qd/phu", day=day.isoformat(), key="storm", name=PAYLOAD,
                               start_s=0, end_s=86_399))
    _login(client, "admin")
    resp = client.get("/")
    assert resp.status_code == 200
    assert "<script>alert(2)" not in resp.text and "&lt;script&gt;alert(2)" in resp.text


def test_presence_changes_are_recorded(prog):
    tele = Telemetry(prog)
    for status in (b"online", b"online", b"offline", b"online"):
        tele.handle(topics.rx_status("phu-1"), status)
    with session_scope(prog) as db:
        rows = db.scalars(select(Presence).where(Presence.rx_id == "phu-1").order_by(Presence.id)).all()
        assert [r.online for r in rows] == [True, False, True]
        assert db.get(Receiver, "phu-1").online is True


def test_a_receiver_without_the_manifest_of_a_scope_it_follows_is_at_fault(prog, client, monkeypatch):
    """A conf but no manifest (the broker lost it) plays nothing: the cluster shows a fault, not ``ok``."""
    from controller.models import Publication
    from controller.services import telemetry as tele_mod

    with session_scope(prog) as db:
        for scope in ("area/hue", "area/qd", "area/qd/phu"):
            db.add(Publication(kind="manifest", scope=scope, version=1, content_hash="h", payload="{}", created_ms=0))
    clock = [10_000_000]
    monkeypatch.setattr(tele_mod, "now_ms", lambda: clock[0])
    tele = Telemetry(prog)
    tele.handle(topics.rx_status("phu-1"), b"online")

    def beat(held):
        tele.handle(topics.rx_hb("phu-1"), events.encode({"v": 1, "rx": "phu-1", "ts": clock[0],
                                                           "manifests": {s: 1 for s in held}}))

    def open_faults():
        with session_scope(prog) as db:
            return [(f.code, f.detail) for f in db.scalars(select(Fault).where(
                Fault.rx_id == "phu-1", Fault.cleared_ms.is_(None)))]

    beat(["area/hue", "area/qd"])
    assert open_faults() == []  # just connected: its retained manifests may still be on the way
    clock[0] += prog.config["MANIFEST_GRACE_S"] * 1000
    beat(["area/hue", "area/qd"])
    assert open_faults() == [("manifest_missing", "no manifest held for area/qd/phu")]
    beat(["area/hue", "area/qd"])
    assert len(open_faults()) == 1  # one open fault, not one per heartbeat
    clock[0] += 1000
    beat(["area/hue", "area/qd", "area/qd/phu"])
    assert open_faults() == []
