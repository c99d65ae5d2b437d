"""What the system shows must be what happened: no item is placed, approved, sent or counted missed in the past.

Every test sets the clock (the ``clock`` fixture patches each ``now_ms`` the programme uses, or passes ``now``
to the pure functions): none depends on today's date. The commune's evening session is 17:00-18:00, Monday
to Saturday; bulletin 1 lasts 10 minutes, bulletin 2 50 minutes (tests/controller/conftest.py).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest

from controller.db import session_scope
from controller.models import Event, MissedPlay, ProgrammeItem, Publication
from controller.services import asrun
from schedules import signing, topics
from schedules.manifest import Manifest, MediaRef
from schedules.planner import LATE_LEAD_MS, last_start, next_opening, occurrence_id, plan
from schedules.programme import AreaNode, Entry, Programme

from helpers import basic, count_rows

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
ADMIN = basic("admin", "pw-admin")
OP_PHU = basic("op-phu", "pw-op-phu")
APPROVER = basic("appr-phu", "pw-appr-phu")
MONDAY = date(2030, 3, 4)  # the clock's day: a Monday, so the commune holds its sessions
TUESDAY = date(2030, 3, 5)
MIN = 60_000

ON_BOTH_DATABASES = True


def at(hh: int, mm: int, ss: int = 0, day: date = MONDAY) -> int:
    """Local wall time on ``day`` -> UTC epoch ms."""
    return int(datetime.combine(day, time(hh, mm, ss), TZ).timestamp() * 1000)


class Clock:
    """A settable now for every module that asks for it."""

    def __init__(self, ms: int):
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock(at(17, 30))
    for name in ("schedules.events.now_ms", "controller.api.programme.now_ms", "controller.services.programme.now_ms",
                 "controller.services.timeline.now_ms", "controller.pages.common.now_ms"):
        monkeypatch.setattr(name, c)
    return c


def post(client, body: dict, headers=ADMIN):
    return client.post("/api/v1/programme/items", json={"area": "qd/phu", **body}, headers=headers)


def timeline(client, day: date = MONDAY) -> dict:
    return client.get(f"/api/v1/areas/qd/phu/timeline?date={day}", headers=ADMIN).json


def starts(tl: dict, item_id: int) -> list[int]:
    return [i["start_ms"] for i in tl["items"] if i["item"] == item_id]


def _login(client, username: str, password: str) -> str:
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": username, "password": password, "csrf_token": csrf}).status_code \
        == 302
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/programme?area=qd/phu").text).group(1)


# ---- 1. nothing is placed in the past ----------------------------------------------------------------


def test_a_play_once_at_a_time_that_passed_today_is_refused_naming_it(prog, client, clock):
    resp = post(client, {"bulletin_id": 1, "at": "09:00", "mode": "once", "date": str(MONDAY)})
    assert resp.status_code == 422, resp.json
    error = resp.json["error"]
    assert error["code"] == "schedule.in_past"
    assert "04/03/2030 09:00" in error["message_vi"] and "đã qua" in error["message_vi"]
    assert "04/03/2030 09:00" in error["message"]
    assert count_rows(prog, ProgrammeItem) == 0 and count_rows(prog, MissedPlay) == 0


def test_a_session_that_is_over_and_a_day_that_passed_are_refused(prog, client, clock):
    morning = post(client, {"bulletin_id": 1, "session": "morning", "mode": "once", "date": str(MONDAY)})
    assert morning.status_code == 422 and morning.json["error"]["code"] == "schedule.in_past"
    assert "04/03/2030 05:30" in morning.json["error"]["message_vi"]  # the session's start
    saturday = post(client, {"bulletin_id": 1, "session": "evening", "mode": "once", "date": "2030-03-02"})
    assert saturday.status_code == 422 and "02/03/2030 17:00" in saturday.json["error"]["message_vi"]
    by_start = post(client, {"bulletin_id": 1, "start_ms": clock.ms - 1})
    assert by_start.status_code == 422 and by_start.json["error"]["code"] == "schedule.in_past"
    assert count_rows(prog, ProgrammeItem) == 0


def test_a_date_range_that_ended_is_refused_and_recurring_items_with_a_later_play_are_not(prog, client, clock):
    ended = post(client, {"bulletin_id": 1, "at": "09:00", "mode": "range", "date_from": "2030-02-01",
                          "date_to": "2030-03-03"})
    assert ended.status_code == 422 and ended.json["error"]["code"] == "schedule.in_past"
    assert "03/03/2030 09:00" in ended.json["error"]["message_vi"]  # the last play it could have had
    daily = post(client, {"bulletin_id": 1, "at": "09:00", "mode": "daily"})
    assert daily.status_code == 201 and daily.json["placed_at"] == at(9, 0, day=TUESDAY)
    assert daily.json["notice"] is None  # the plain answer: nothing more to say
    # Three plays from 17:00, 10 minutes apart: the first two passed, the third is still to come.
    repeated = post(client, {"bulletin_id": 1, "at": "17:00", "mode": "once", "date": str(MONDAY), "repeat": 3,
                             "gap_s": 600})
    assert repeated.status_code == 201 and repeated.json["placed_at"] == at(17, 40)
    item = repeated.json["item"]["id"]
    assert starts(timeline(client), item) == [at(17, 40)]  # the passed repeats are not on the timeline


def test_approving_a_draft_whose_time_passed_is_refused_in_the_api_and_on_the_page(prog, client, clock):
    draft = post(client, {"bulletin_id": 1, "at": "18:30", "mode": "once", "date": str(MONDAY)}, OP_PHU)
    assert draft.status_code == 201 and draft.json["item"]["status"] == "draft"
    assert "placed_at" not in draft.json  # a draft is placed when it is approved
    item = draft.json["item"]["id"]
    clock.ms = at(19, 0)  # it sat as a draft until its time passed
    resp = client.post(f"/api/v1/programme/items/{item}/approve", headers=APPROVER)
    assert resp.status_code == 422 and resp.json["error"]["code"] == "schedule.in_past"
    assert "04/03/2030 18:30" in resp.json["error"]["message_vi"]
    csrf = _login(client, "appr-phu", "pw-appr-phu")
    page = client.post(f"/programme/items/{item}/approve", data={"csrf_token": csrf, "area": "qd/phu"})
    assert page.status_code == 302
    assert "04/03/2030 18:30" in unquote(page.headers["Location"]).replace("+", " ")
    assert "Thời gian phát đã qua" in client.get(page.headers["Location"]).text
    with session_scope(prog) as db:
        assert db.get(ProgrammeItem, item).status == "draft"
    assert count_rows(prog, MissedPlay) == 0


# ---- 2. a session on air ---------------------------------------------------------------------------------


def test_a_bulletin_added_to_the_session_on_air_plays_after_what_is_still_to_play(prog, client, clock):
    clock.ms = at(16, 0)
    long = post(client, {"bulletin_id": 2, "session": "evening", "mode": "daily", "order": 5}).json["item"]["id"]
    clock.ms = at(17, 5)
    resp = post(client, {"bulletin_id": 1, "session": "evening", "mode": "once", "date": str(MONDAY)})
    assert resp.status_code == 201, resp.json
    assert resp.json["placed_at"] == at(17, 50)
    assert resp.json["notice_vi"] == "Buổi chiều đang phát: bản tin sẽ phát lúc 17:50."
    assert "17:50" in resp.json["notice"]
    tl = timeline(client)
    assert starts(tl, long) == [at(17, 0)]  # what is on air is not moved, though the new item has a lower order
    assert starts(tl, resp.json["item"]["id"]) == [at(17, 50)]


def test_a_bulletin_added_after_the_session_queue_ended_plays_shortly_from_now(prog, client, clock):
    clock.ms = at(16, 0)
    first = post(client, {"bulletin_id": 1, "session": "evening", "mode": "daily"}).json["item"]["id"]
    clock.ms = at(17, 30)
    resp = post(client, {"bulletin_id": 1, "session": "evening", "mode": "once", "date": str(MONDAY)})
    assert resp.status_code == 201, resp.json
    placed = at(17, 30) + LATE_LEAD_MS
    assert resp.json["placed_at"] == placed
    assert resp.json["notice_vi"] == "Buổi chiều đang phát: bản tin sẽ phát lúc 17:30:30."
    tl = timeline(client)
    assert starts(tl, first) == [at(17, 0)]
    added = [i for i in tl["items"] if i["item"] == resp.json["item"]["id"]]
    assert [(i["start_ms"], i["state"]) for i in added] == [(placed, "scheduled")]
    # Receivers get it as an item still to come, not one that started in the past.
    svc = prog.extensions["loaxa.services"]
    svc.dispatcher.publish_everything(now=clock.ms)
    with session_scope(prog) as db:
        pub = db.query(Publication).filter_by(kind="manifest", scope="area/qd/phu") \
            .order_by(Publication.version.desc())[0]
        body = signing.verify(svc.key.public_key(), pub.payload.encode(), kind="manifest", scope="area/qd/phu")
    sent = Manifest.from_body(body).items
    assert [i.start_ms for i in sent if i.id.startswith(f"pi-{resp.json['item']['id']}.")] == [placed]
    assert all(i.start_ms >= clock.ms for i in sent)


def test_the_session_on_air_without_room_refuses_a_play_once_item_and_a_daily_one_starts_next_time(
        prog, client, clock):
    clock.ms = at(16, 0)
    post(client, {"bulletin_id": 2, "session": "evening", "mode": "daily"})  # 17:00-17:50
    clock.ms = at(17, 51)  # 10 minutes from 17:51:30 would end after 18:00
    once = post(client, {"bulletin_id": 1, "session": "evening", "mode": "once", "date": str(MONDAY)})
    assert once.status_code == 422 and once.json["error"]["code"] == "schedule.session_full"
    assert "Buổi chiều đang phát" in once.json["error"]["message_vi"] and "18:00" in once.json["error"]["message_vi"]
    assert count_rows(prog, ProgrammeItem) == 1
    daily = post(client, {"bulletin_id": 1, "session": "evening", "mode": "daily"})
    assert daily.status_code == 201, daily.json
    assert daily.json["placed_at"] == at(17, 50, day=TUESDAY)  # after the long one, the next evening
    assert "không còn đủ chỗ" in daily.json["notice_vi"] and "17:50 ngày 05/03/2030" in daily.json["notice_vi"]
    item = daily.json["item"]["id"]
    tl = timeline(client)
    assert starts(tl, item) == []
    assert [o["cut_ms"] for o in tl["overruns"] if o["entry_id"] == item] == [10 * MIN]  # reported, not hidden


def test_approving_on_the_page_during_the_session_says_when_it_plays(prog, client, clock):
    clock.ms = at(16, 0)
    item = post(client, {"bulletin_id": 1, "session": "evening", "mode": "once", "date": str(MONDAY)},
                OP_PHU).json["item"]["id"]
    clock.ms = at(17, 5)
    csrf = _login(client, "appr-phu", "pw-appr-phu")
    done = client.post(f"/programme/items/{item}/approve", data={"csrf_token": csrf, "area": "qd/phu"},
                       follow_redirects=True)
    assert "Đã duyệt. Buổi chiều đang phát: bản tin sẽ phát lúc 17:05:30." in done.text
    api = client.post(f"/api/v1/programme/items/{item}/approve", headers=APPROVER)
    assert api.status_code == 200 and "placed_at" not in api.json  # approving again moves nothing
    assert starts(timeline(client), item) == [at(17, 5, 30)]


def test_an_edit_keeps_an_item_on_air_in_place_and_a_move_into_the_session_is_placed_from_now(prog, client, clock):
    clock.ms = at(16, 0)
    daily = post(client, {"bulletin_id": 1, "session": "evening", "mode": "daily"}).json["item"]["id"]
    morning = post(client, {"bulletin_id": 1, "session": "morning", "mode": "daily", "order": 0}).json["item"]["id"]
    clock.ms = at(17, 5)
    kept = client.patch(f"/api/v1/programme/items/{daily}", json={"priority": "priority"}, headers=ADMIN)
    assert kept.status_code == 200 and kept.json["item"]["status"] == "approved"
    assert starts(timeline(client), daily) == [at(17, 0)]  # still the play under way, not a second one later
    moved = client.patch(f"/api/v1/programme/items/{morning}", json={"session": "evening"}, headers=ADMIN)
    assert moved.status_code == 200, moved.json
    assert moved.json["placed_at"] == at(17, 10) and "17:10" in moved.json["notice_vi"]
    assert starts(timeline(client), morning) == [at(17, 10)]


# ---- 2. the timeline says what became of each play --------------------------------------------------------


def test_a_play_whose_start_passed_without_a_play_is_not_shown_as_scheduled(prog, client, clock):
    clock.ms = at(16, 0)
    item = post(client, {"bulletin_id": 1, "at": "16:30", "mode": "once", "date": str(MONDAY)}).json["item"]
    other = post(client, {"bulletin_id": 1, "at": "16:45", "mode": "once", "date": str(MONDAY)}).json["item"]
    assert [i["state"] for i in timeline(client)["items"]] == ["scheduled", "scheduled"]
    occ = item["occurrences"][0]
    with session_scope(prog) as db:
        db.add(Event(id="00000000-0000-4000-8000-0000000000a1", rx_id="phu-1", ts_ms=at(16, 40),
                     type="playback.finished", item_id=occ, programme_item_id=item["id"], body="{}",
                     received_ms=at(16, 40)))
    clock.ms = at(16, 50)
    states = {i["item"]: i["state"] for i in timeline(client)["items"]}
    assert states == {item["id"]: "played", other["id"]: "playing"}
    clock.ms = at(17, 0)
    assert {i["item"]: i["state"] for i in timeline(client)["items"]}[other["id"]] == "not_played"


# ---- 3. nothing before an item entered the programme is sent or missed ------------------------------------


def test_a_daily_item_approved_after_this_mornings_play_is_not_counted_missed(prog, client, clock):
    clock.ms = at(10, 0)
    item = post(client, {"bulletin_id": 1, "at": "06:00", "mode": "daily"}).json["item"]["id"]
    assert asrun.mark_missed(prog, now=at(10, 5)) == 0  # phu-1 existed at 06:00, but the item did not
    assert starts(timeline(client), item) == []
    assert starts(timeline(client, TUESDAY), item) == [at(6, 0, day=TUESDAY)]
    assert asrun.mark_missed(prog, now=at(10, 5, day=TUESDAY)) == 1  # tomorrow's is due and phu-1 never played it
    with session_scope(prog) as db:
        assert [m.occurrence_id for m in db.query(MissedPlay)] == [occurrence_id(item, "qd/phu", TUESDAY, 0)]


# ---- the planner, with data ----------------------------------------------------------------------------

MEDIA = MediaRef("a" * 64, "/media/" + "a" * 64 + ".mp3", 1, 10 * MIN)
AREAS = [AreaNode("d", "district"), AreaNode("d/c", "commune", "d")]


def entry(id_: int, minutes: int = 10, **kw) -> Entry:
    kw.setdefault("session_key", None if "at" in kw else "evening")
    kw.setdefault("mode", "daily")
    return Entry(id=id_, kind="audio", title=f"e{id_}", priority="normal", duration_ms=minutes * MIN,
                 areas=("d/c",), media=MEDIA, **kw)


def placed(p, id_: int) -> list[tuple[str, int]]:
    return [(i.id, i.start_ms) for i in p.manifests[topics.area_scope("d/c")].items if i.id.startswith(f"pi-{id_}.")]


def test_plan_never_places_a_play_before_its_item_entered_the_programme():
    es = [entry(1, at=time(6, 0), since_ms=at(10, 0)), entry(2, at=time(17, 0), repeat=3, gap_ms=10 * MIN,
                                                             since_ms=at(17, 25))]
    p = plan(Programme(es), AREAS, at(0, 0), window_ms=48 * 3600_000)
    assert placed(p, 1) == [("pi-1.20300305.0.d/c", at(6, 0, day=TUESDAY))]
    monday_2 = [(occ, start) for occ, start in placed(p, 2) if ".20300304." in occ]
    assert monday_2 == [("pi-2.20300304.2.d/c", at(17, 40))]
    assert not p.overruns


def test_plan_places_an_item_approved_during_its_session_after_what_still_plays_and_only_whole():
    es = [entry(1, minutes=20, order=9, since_ms=at(9, 0)),           # on time: 17:00-17:20
          entry(2, minutes=10, order=0, since_ms=at(17, 5)),          # late: after the queue, 17:20
          entry(3, minutes=10, since_ms=at(17, 40, 10)),              # late, the queue over: 17:40:40
          entry(4, minutes=10, repeat=2, gap_ms=MIN, since_ms=at(17, 42)),  # 21 min from 17:50:40: no room
          entry(5, minutes=5, since_ms=at(18, 0))]                    # after the session: not part of it
    p = plan(Programme(es), AREAS, at(0, 0), window_ms=24 * 3600_000)
    monday = {id_: [s for occ, s in placed(p, id_) if ".20300304." in occ] for id_ in range(1, 6)}
    assert monday == {1: [at(17, 0)], 2: [at(17, 20)], 3: [at(17, 40, 40)], 4: [], 5: []}
    cut = [(o.occurrence_id, o.cut_ms) for o in p.overruns if o.session_start_ms == at(17, 0)]
    assert cut == [("pi-4.20300304.0.d/c", 10 * MIN), ("pi-4.20300304.1.d/c", 10 * MIN)]
    assert [u.free_ms for u in p.underruns if u.session_start_ms == at(17, 0)] == [at(18, 0) - at(17, 50, 40)]


def test_next_opening_and_last_start():
    prog = Programme([])
    now = at(17, 30)
    assert next_opening(entry(1, at=time(9, 0), mode="once", day=MONDAY), AREAS, prog, now) is None
    assert last_start(entry(1, at=time(9, 0), mode="once", day=MONDAY), AREAS, prog, now) == at(9, 0)
    on_air = next_opening(entry(2, mode="once", day=MONDAY), AREAS, prog, now)
    assert on_air.start_ms == now and on_air.slot.start_ms == at(17, 0)  # on air: packing decides when
    assert next_opening(entry(3, session_key="morning", mode="daily"), AREAS, prog, now).start_ms \
        == at(5, 30, day=TUESDAY)
    ended = entry(4, at=time(9, 0), mode="range", date_from=date(2030, 2, 1), date_to=date(2030, 3, 3))
    assert next_opening(ended, AREAS, prog, now) is None and last_start(ended, AREAS, prog, now) == at(9, 0, day=date(
        2030, 3, 3))
    sunday = entry(5, mode="once", day=date(2030, 3, 10))  # no commune session on a Sunday
    assert next_opening(sunday, AREAS, prog, now) is None
