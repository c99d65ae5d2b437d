"""Telemetry written in batches: the same rows as one message at a time, idempotent by event id, and one
bad message costs only itself.

The ingest thread writes whatever queued up in one transaction (``BATCH_MAX``): 1,000 clusters
answering an alert (2,000 events) were visible at the controller 2.3 s after they were sent, one
commit and four statements per event; 0.5 s in batches (bench/emergency.py).
"""

from __future__ import annotations

from sqlalchemy import select

from controller.db import session_scope
from controller.models import Event, Fault, Presence, Receiver
from controller.services import telemetry as telemetry_mod
from controller.services.telemetry import Telemetry
from schedules import events, topics, vocab


def _event(rx: str, type_: str, **fields) -> tuple[str, bytes, str]:
    ev = events.make_event(rx, type_, **fields)
    return topics.rx_events(rx), events.encode(ev), ev["id"]


def _stored(app) -> list[tuple[str, str, str | None]]:
    with session_scope(app) as db:
        return sorted((e.id, e.rx_id, e.item_id) for e in db.scalars(select(Event)))


def test_a_batch_stores_what_one_by_one_would_and_each_event_once(prog, caplog):
    tele = Telemetry(prog)
    before_topic, before_payload, before_id = _event("phu-1", events.COMMAND_ACK, action="resync")
    tele.handle(before_topic, before_payload)  # stored before the batch; resent in it
    ack = _event("phu-1", events.COMMAND_ACK, action="emergency", item_id="al-1")
    started = _event("an-1", events.PLAYBACK_STARTED, item_id="al-1", mode="live")
    fault = _event("an-1", events.FAULT_RAISED, fault="amplifier_fault")
    fault_again = _event("an-1", events.FAULT_RAISED, fault="amplifier_fault")
    stranger = _event("nobody", events.COMMAND_ACK, action="resync")
    batch = [(topics.rx_status("phu-1"), b"online"), ack[:2], ack[:2], (before_topic, before_payload), started[:2],
             fault[:2], fault_again[:2], stranger[:2], (topics.rx_events("an-1"), b"{not json"),
             (topics.rx_events("phu-1"), _event("an-1", events.COMMAND_ACK, action="resync")[1]),  # not its own
             ("loaxa/v1/elsewhere", b"x")]
    tele.handle_batch(batch)
    tele.handle_batch(batch)  # the whole batch again (an outbox resending): nothing new
    assert _stored(prog) == sorted([(before_id, "phu-1", None), (ack[2], "phu-1", "al-1"),
                                    (started[2], "an-1", "al-1"), (fault[2], "an-1", None),
                                    (fault_again[2], "an-1", None)])
    with session_scope(prog) as db:
        faults = sorted((f.rx_id, f.code) for f in db.scalars(select(Fault)))
        presence = [p.online for p in db.scalars(select(Presence).where(Presence.rx_id == "phu-1"))]
        assert db.get(Receiver, "an-1").last_seen_ms is not None and db.get(Receiver, "phu-1").online is True
    # One amplifier fault kept open once; the malformed event raised protocol_violation and stored nothing.
    assert faults == [("an-1", "amplifier_fault"), ("an-1", vocab.PROTOCOL_VIOLATION)]
    assert presence == [True]
    assert tele.ingested == 1 + 2 * len(batch)
    assert "one by one" not in caplog.text  # in one transaction each time: nothing had to be written again


def test_a_message_that_breaks_the_batch_costs_only_itself(prog, monkeypatch, caplog):
    tele = Telemetry(prog)
    good = [_event("phu-1", events.COMMAND_ACK, action="resync") for _ in range(3)]
    bad = _event("an-1", events.COMMAND_ACK, action="resync")
    real = Telemetry._event

    def breaking(self, db, rx, payload, now, known=None):
        if bad[2].encode() in payload:
            raise RuntimeError("the database said no")
        return real(self, db, rx, payload, now, known)

    monkeypatch.setattr(Telemetry, "_event", breaking)
    tele.handle_batch([good[0][:2], bad[:2], good[1][:2], good[2][:2]])
    assert [i for i, _rx, _item in _stored(prog)] == sorted(g[2] for g in good)
    assert "could not ingest a message" in caplog.text and tele.ingested == 3


def test_the_ingest_thread_writes_what_queued_up_together_and_wakes_the_live_views(prog, monkeypatch):
    monkeypatch.setattr(telemetry_mod, "BATCH_MAX", 7)
    tele = Telemetry(prog)
    sizes: list[int] = []
    real = tele.handle_batch
    tele.handle_batch = lambda batch: (sizes.append(len(batch)), real(batch))  # type: ignore[method-assign]
    woken = []
    tele.on_ingested = lambda: woken.append(1)
    sent = [_event("phu-1" if n % 2 else "an-1", events.COMMAND_ACK, action="resync") for n in range(20)]
    for topic, payload, _id in sent:
        tele.on_message(topic, payload)  # queued before the thread runs: it takes them in batches
    tele.on_message(topics.rx_hb("phu-1"), b"{}")
    tele.start()
    tele.stop()
    assert [i for i, _rx, _item in _stored(prog)] == sorted(s[2] for s in sent)
    assert sizes == [7, 7, 7] and len(woken) == 3
