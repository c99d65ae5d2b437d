"""An alert's natural end waits for the clusters still playing it (at most END_WAIT_MS), so none is cut.

Each cluster starts an alert when its command (and the media) reached it, a short lead later than the
controller's ``started_ms``, so it ends that much after the controller's ``ends_ms``. Ending the alert
(clearing its state, ``stop`` by id) at ``ends_ms`` cut the closing chime of every cluster whose end was
still to come: about one natural end in four in tests/test_alerts_end_to_end.py, and the whole tail of a
cluster that had to fetch the media first.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.db import session_scope
from controller.models import Alert
from controller.services import emergencies as em
from controller.services.telemetry import Telemetry
from schedules import events, topics
from schedules.events import now_ms


@pytest.fixture
def running(prog):
    """An alert to qd/phu and qd/an whose sound is over by the controller's clock; phu-1 and an-1 took it."""
    now = now_ms()
    with session_scope(prog) as db:
        db.add(Alert(id="al-end-1", mode="live", status="running", title="Lũ", area_id="qd",
                     targets='{"areas": ["qd/phu", "qd/an"], "receivers": []}',
                     scopes='["area/qd/phu", "area/qd/an"]', target_rx='["an-1", "phu-1"]', content_kind="text",
                     text="x", volume=100, chime=True, repeat=1, gap_s=1.0, created_ms=now - 20_000,
                     started_ms=now - 20_000, ends_ms=now - 100, duration_ms=19_900))
    return prog


def _report(app, rx: str, type_: str, **fields) -> None:
    Telemetry(app).handle(topics.rx_events(rx), events.encode(events.make_event(rx, type_, **fields)))


def _status(app) -> tuple[str, str | None]:
    with session_scope(app) as db:
        alert = db.get(Alert, "al-end-1")
        return alert.status, alert.end_reason


def test_the_end_waits_for_the_clusters_still_playing_then_comes_at_once(running):
    worker = running.extensions["loaxa.services"].emergencies
    _report(running, "phu-1", events.COMMAND_ACK, action="emergency", item_id="al-end-1")
    _report(running, "an-1", events.COMMAND_ACK, action="emergency", item_id="al-end-1")
    _report(running, "phu-1", events.PLAYBACK_STARTED, item_id="al-end-1", mode="live")
    # an-1 took it by its command and is still fetching the media; phu-1 plays it: neither is cut.
    assert worker.tick() == 0 and _status(running) == ("running", None)
    _report(running, "phu-1", events.PLAYBACK_FINISHED, item_id="al-end-1", end_reason="complete", mode="live")
    assert worker.tick() == 0
    _report(running, "an-1", events.PLAYBACK_STARTED, item_id="al-end-1", mode="live")
    _report(running, "an-1", events.PLAYBACK_FAILED, item_id="al-end-1", code="play.error", mode="live")
    assert worker.tick() == 1 and _status(running) == ("ended", "complete")


def test_a_join_that_found_nothing_left_and_a_cluster_that_never_ends_hold_it_no_longer(running):
    worker = running.extensions["loaxa.services"].emergencies
    _report(running, "an-1", events.COMMAND_ACK, action="emergency", item_id="al-end-1", joined=True)
    assert worker.tick() == 1 and _status(running) == ("ended", "complete")  # joined at its end: nothing to wait
    with session_scope(running) as db:
        alert = db.get(Alert, "al-end-1")
        alert.status, alert.ended_ms, alert.end_reason = "running", None, None
        alert.ends_ms = now_ms() - em.END_WAIT_MS - 1
    _report(running, "phu-1", events.PLAYBACK_STARTED, item_id="al-end-1", mode="live")
    assert worker.tick() == 1 and _status(running) == ("ended", "complete")  # its end never came: waited enough
    with session_scope(running) as db:
        assert db.scalars(select(Alert.status)).all() == ["ended"]
