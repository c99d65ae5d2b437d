"""Dispatch and telemetry against a real Mosquitto: retained signed manifests, idempotent ingest."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from controller import auth, create_app, db
from controller.db import session_scope
from controller.models import Bulletin, Event, Fault, Media, ProgrammeItem, Publication, Receiver
from controller.mqtt import parse_url
from controller.services.telemetry import Telemetry
from schedules import events, signing, topics
from schedules.events import now_ms

from helpers import make_config, seed_district, wait_until


@pytest.fixture
def live(tmp_path, mqtt_url):
    """A controller with its services started against the test broker."""
    app = create_app(make_config(tmp_path, MQTT_URL=mqtt_url, MQTT_CLIENT_ID=f"ctl-{tmp_path.name}"))
    db.upgrade(app.config["DATABASE_URL"])
    seed_district(app)
    with session_scope(app) as s:
        s.add(Receiver(id="phu-1", area_id="qd/phu", name="Phú 1", token_hash=auth.token_hash("t"), created_ms=0))
    svc = app.extensions["loaxa.services"]
    svc.start()
    assert svc.link.connected.wait(10), "controller did not connect to the test broker"
    yield app
    svc.stop()
    app.extensions["loaxa.engine"].dispose()


class Listener:
    """A plain paho subscriber that records what arrives."""

    def __init__(self, url: str, topic: str):
        host, port, *_ = parse_url(url)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: (c.subscribe(topic, 1), None)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload), m.retain))
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _schedule(app, start_ms: int) -> None:
    with session_scope(app) as s:
        s.add(Media(sha256="c" * 64, format="mp3", bytes=10, duration_ms=5000, created_ms=0))
        b = Bulletin(title="t", area_id="qd/phu", status="ready", media_sha256="c" * 64, created_ms=0)
        s.add(b)
        s.flush()
        local = datetime.fromtimestamp(start_ms / 1000, ZoneInfo("Asia/Ho_Chi_Minh"))
        s.add(ProgrammeItem(bulletin_id=b.id, area_id="qd/phu", start_ms=start_ms, duration_ms=5000, created_ms=0,
                            mode="once", day=local.date().isoformat(), status="approved",
                            at_s=local.hour * 3600 + local.minute * 60 + local.second))


def test_changed_manifest_is_published_retained_and_unchanged_is_not(live, mqtt_url):
    svc = live.extensions["loaxa.services"]
    wait_until(lambda: svc.dispatcher.publish_everything() == 0, what="first publication to settle")
    _schedule(live, now_ms() + 3600_000)
    assert svc.dispatcher.publish_programme() == 1
    assert svc.dispatcher.publish_programme() == 0  # unchanged: nothing re-sent
    # A publish is queued, not yet at the broker, when publish_programme returns: wait until the
    # broker has passed version 2 on, then subscribe late.
    early = Listener(mqtt_url, topics.sched("area/qd/phu"))
    try:
        wait_until(lambda: any(b'"version":2' in m[1] for m in early.messages), what="version 2 at the broker")
    finally:
        early.close()
    listener = Listener(mqtt_url, topics.sched("area/qd/phu"))
    try:
        msg = wait_until(lambda: listener.messages, what="retained manifest")[0]
    finally:
        listener.close()
    assert msg[2] is True, "a late subscriber gets the manifest because it is retained"
    body = signing.verify(svc.key.public_key(), msg[1], kind="manifest", scope="area/qd/phu")
    assert body["version"] == 2 and len(body["items"]) == 1  # version 1 was the empty programme


def test_restarted_controller_does_not_republish(live, tmp_path, mqtt_url):
    svc = live.extensions["loaxa.services"]
    _schedule(live, now_ms() + 3600_000)
    svc.dispatcher.publish_everything()
    with session_scope(live) as s:
        before = s.scalar(select(func.count()).select_from(Publication))
    # A second controller process on the same database (what a restart looks like).
    again = create_app(make_config(tmp_path, MQTT_URL=mqtt_url, MQTT_CLIENT_ID="ctl-again"))
    try:
        assert again.extensions["loaxa.services"].dispatcher.publish_everything() == 0
        with session_scope(again) as s:
            assert s.scalar(select(func.count()).select_from(Publication)) == before
    finally:
        again.extensions["loaxa.engine"].dispose()


def test_receiver_gets_a_signed_conf_with_its_scopes(live, mqtt_url):
    svc = live.extensions["loaxa.services"]
    listener = Listener(mqtt_url, topics.conf("phu-1"))
    try:
        msg = wait_until(lambda: listener.messages, what="retained conf")[0]
    finally:
        listener.close()
    body = signing.verify(svc.key.public_key(), msg[1], kind="conf", scope="rx/phu-1")
    assert body["scopes"] == ["area/hue", "area/qd", "area/qd/phu", "rx/phu-1"]


def test_events_are_ingested_once_and_faults_tracked(live, mqtt_url):
    host, port, *_ = parse_url(mqtt_url)
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect(host, port)
    pub.loop_start()
    try:
        pub.publish(topics.rx_status("phu-1"), b"online", qos=1, retain=True).wait_for_publish(5)
        started = events.make_event("phu-1", events.PLAYBACK_STARTED, item_id="pi-1")
        fault = events.make_event("phu-1", events.FAULT_RAISED, fault="download_failed", reason="404")
        for ev in (started, started, fault, started):  # an outbox resending after a reconnect
            pub.publish(topics.rx_events("phu-1"), events.encode(ev), qos=1).wait_for_publish(5)
        pub.publish(topics.rx_events("phu-1"), b"{not json", qos=1).wait_for_publish(5)
        spoof = events.make_event("an-9", events.PLAYBACK_STARTED, item_id="pi-1")
        pub.publish(topics.rx_events("phu-1"), events.encode(spoof), qos=1).wait_for_publish(5)
        cleared = events.make_event("phu-1", events.FAULT_CLEARED, fault="download_failed")
        pub.publish(topics.rx_events("phu-1"), events.encode(cleared), qos=1).wait_for_publish(5)

        def settled():
            with session_scope(live) as s:
                return s.scalar(select(func.count()).select_from(Event)) == 3 and \
                    s.scalars(select(Fault).where(Fault.code == "download_failed")).one().cleared_ms is not None

        wait_until(settled, what="events ingested")
        with session_scope(live) as s:
            rx = s.get(Receiver, "phu-1")
            assert rx.online is True
            assert json.loads(s.get(Event, started["id"]).body)["item_id"] == "pi-1"
            # The payload that was not JSON is stored nowhere, and is a protocol violation of that receiver.
            assert sorted(f.code for f in s.scalars(select(Fault))) == ["download_failed", "protocol_violation"]
        pub.publish(topics.rx_status("phu-1"), b"offline", qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: not _online(live, "phu-1"), what="offline status")
    finally:
        pub.publish(topics.rx_status("phu-1"), b"", qos=1, retain=True).wait_for_publish(5)
        pub.disconnect()
        pub.loop_stop()


def _online(app, rx_id):
    with session_scope(app) as s:
        return s.get(Receiver, rx_id).online


def test_embedded_broker_fallbacks(tmp_path):
    """Both embedded brokers start, take a retained message, and stop."""
    from controller.broker import EmbeddedBroker

    for prefer in ("mosquitto", "amqtt"):
        broker = EmbeddedBroker(tmp_path / prefer).start(prefer=prefer)
        try:
            host, port, *_ = parse_url(broker.url)
            c = paho.Client(CallbackAPIVersion.VERSION2)
            c.connect(host, port)
            c.loop_start()
            c.publish("loaxa/v1/test", b"x", qos=1, retain=True).wait_for_publish(5)
            c.disconnect()
            c.loop_stop()
            listener = Listener(broker.url, "loaxa/v1/test")
            try:
                got = wait_until(lambda ls=listener: ls.messages, what=f"{prefer} retained")
                assert got[0][1] == b"x"
            finally:
                listener.close()
        finally:
            broker.stop()


PERIODIC = ("alerts-tick", "housekeeping", "mark-missed", "refresh-manifests", "watch-fleet")


def test_scheduler_jobs_live_in_the_database(live, tmp_path, mqtt_url):
    from sqlalchemy import text

    svc = live.extensions["loaxa.services"]
    svc.programme_changed()
    svc.programme_changed()  # debounced: still one rebuild job
    with session_scope(live) as s:
        ids = sorted(r[0] for r in s.execute(text("SELECT id FROM apscheduler_jobs")))
    # The interval jobs, plus the debounced rebuild and the post-connect audit while they are pending.
    assert set(PERIODIC) <= set(ids) <= set(PERIODIC) | {"rebuild-manifests", "audit-retained"}
    svc.stop()
    again = create_app(make_config(tmp_path, MQTT_URL=mqtt_url, MQTT_CLIENT_ID="ctl-restart"))
    try:
        again.extensions["loaxa.services"].start()
        with session_scope(again) as s:
            ids = sorted(r[0] for r in s.execute(text("SELECT id FROM apscheduler_jobs")))
        assert set(PERIODIC) <= set(ids) <= set(PERIODIC) | {"rebuild-manifests", "audit-retained"}  # kept, not doubled
    finally:
        again.extensions["loaxa.services"].stop()
        again.extensions["loaxa.engine"].dispose()


def test_housekeeping_job_folds_events_into_the_as_run_table(live):
    from controller.models import AsRunRecord
    from controller.runtime import housekeeping

    ev = events.make_event("phu-1", events.PLAYBACK_FINISHED, item_id="pi-1.20261123.0.qd/phu", scope="area/qd/phu",
                           planned_start_ms=now_ms() - 60_000, played_ms=5000, planned_duration_ms=5000,
                           end_reason="complete")
    Telemetry(live).handle(topics.rx_events("phu-1"), events.encode(ev))
    with session_scope(live) as s:
        assert s.query(AsRunRecord).count() == 0
    housekeeping(live.extensions["loaxa.services"].key_id)
    with session_scope(live) as s:
        row = s.query(AsRunRecord).one()
        assert (row.occurrence_id, row.rx_id) == ("pi-1.20261123.0.qd/phu", "phu-1")
