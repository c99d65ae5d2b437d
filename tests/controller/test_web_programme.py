"""The programme page and approval forms (Flask test client; the browser path is in the end-to-end test)."""

from __future__ import annotations

import re

from controller.db import session_scope
from controller.models import Event, MissedPlay, ProgrammeItem, Receiver
from controller.services import asrun
from schedules.events import now_ms

from helpers import basic


def _login(client, username, password):
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    resp = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf})
    assert resp.status_code == 302, resp.text
    return client


def _draft(client):
    resp = client.post("/api/v1/programme/items", headers=basic("op-phu", "pw-op-phu"),
                       json={"bulletin_id": 1, "area": "qd/phu", "session": "evening", "mode": "daily"})
    assert resp.status_code == 201
    return resp.json["item"]["id"]


def test_page_shows_the_timeline_and_lets_an_approver_approve(prog, client):
    item_id = _draft(client)
    _login(client, "op-phu", "pw-op-phu")
    html = client.get("/programme?area=qd/phu&days=7").text
    assert 'id="timeline"' in html and html.count('class="track"') == 7
    assert f'data-item="{item_id}"' in html and "Duyệt</button>" not in html  # an operator cannot approve
    refused = client.post(f"/programme/items/{item_id}/approve",
                          data={"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)})
    assert refused.status_code == 302 and "quy%E1%BB%81n" in refused.headers["Location"]  # "quyền" (no right)
    client.post("/logout", data={"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)})

    _login(client, "appr-phu", "pw-appr-phu")
    html = client.get("/programme?area=qd/phu").text
    assert "Duyệt</button>" in html
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    assert client.post(f"/programme/items/{item_id}/approve", data={}).status_code == 400  # no CSRF token
    done = client.post(f"/programme/items/{item_id}/approve", data={"csrf_token": csrf, "area": "qd/phu"},
                       follow_redirects=True)
    assert "Đã duyệt." in done.text
    with session_scope(prog) as db:
        assert db.get(ProgrammeItem, item_id).status == "approved"


def test_other_communes_are_hidden(prog, client):
    _login(client, "op-an", "pw-op-an")
    assert client.get("/programme?area=qd/phu").status_code == 404
    item_id = _draft(client)
    assert client.post(f"/programme/items/{item_id}/approve", data={}).status_code in (400, 404)
    assert client.get("/programme").status_code == 200


def test_login_is_required(client):
    assert client.get("/programme").status_code == 302


def test_missed_plays_are_marked_once(prog, client, monkeypatch):
    start = (now_ms() // 1000 - 3600) * 1000  # an hour ago, on a whole second: long over, past the grace period
    body = {"bulletin_id": 1, "area": "qd/phu", "start_ms": start}
    monkeypatch.setattr("controller.api.programme.now_ms", lambda: start)
    occurrence = client.post("/api/v1/programme/items", json=body, headers=basic("admin", "pw-admin")).json
    occ = occurrence["item"]["occurrences"][0]
    with session_scope(prog) as db:
        db.add(Receiver(id="phu-2", area_id="qd/phu", name="P2", token_hash="h" * 64, created_ms=0))
        db.add(Event(id="00000000-0000-4000-8000-000000000001", rx_id="phu-1", ts_ms=start, type="playback.started",
                     item_id=occ, programme_item_id=1, body="{}", received_ms=start))
    assert asrun.mark_missed(prog) == 1  # phu-1 started it; phu-2 never did
    assert asrun.mark_missed(prog) == 0  # found once, not again
    with session_scope(prog) as db:
        missed = db.query(MissedPlay).one()
        assert (missed.rx_id, missed.occurrence_id, missed.planned_start_ms) == ("phu-2", occ, start)
