"""The event outbox: durable before sending, deleted only after PUBACK from a real broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from receiver.mqtt import MqttSession
from receiver.outbox import Outbox
from schedules import events, topics

from rx_support import Broker, Collector, signed_conf, unique, wait_until


def _event(rx: str, n: int) -> bytes:
    return events.encode(events.make_event(rx, events.FAULT_RAISED, fault="overheating", n=n))


def test_pending_survives_close_and_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    seqs = [box.add("t/a", _event("rx", n)) for n in range(3)]
    box.mark_sent(seqs[0], 7)
    box.close()

    box = Outbox(tmp_path / "outbox.db")
    try:
        pending = box.pending()
        assert [p.seq for p in pending] == seqs
        assert [json.loads(p.payload)["n"] for p in pending] == [0, 1, 2]
        assert all(p.mid is None for p in pending)  # message ids of the old session are forgotten
        assert pending[0].event_id == json.loads(pending[0].payload)["id"]
        box.mark_sent(seqs[1], 11)
        assert box.ack(11) is True
        assert [p.seq for p in box.pending()] == [seqs[0], seqs[2]]
        # A PUBACK that overtakes mark_sent still deletes the row.
        assert box.ack(12) is False
        box.mark_sent(seqs[2], 12)
        assert [p.seq for p in box.pending()] == [seqs[0]]
    finally:
        box.close()


def test_outbox_delivered_and_deleted_after_puback(
    tmp_path: Path, broker: Broker, collector: Callable[[list[str]], Collector]
) -> None:
    rx = unique("rx-")
    topic = topics.rx_events(rx)
    box = Outbox(tmp_path / "outbox.db")
    payloads = [_event(rx, n) for n in range(5)]
    for payload in payloads:
        box.add(topic, payload)
    box.close()  # as if the receiver rebooted before it could send anything
    box = Outbox(tmp_path / "outbox.db")
    sink = collector([topic])
    connected = threading.Event()
    session = MqttSession(
        rx,
        broker.host,
        broker.port,
        on_connected=connected.set,
        on_published=box.ack,
    )
    try:
        session.start()
        assert connected.wait(10)
        for pending in box.pending():
            mid = session.publish(pending.topic, pending.payload, qos=pending.qos)
            assert mid is not None
            box.mark_sent(pending.seq, mid)
        wait_until(lambda: box.count() == 0)
        wait_until(lambda: len(sink.on(topic)) >= len(payloads))
        assert sink.on(topic)[: len(payloads)] == payloads
    finally:
        session.stop()
        box.close()
    sink.publish(topics.rx_status(rx), b"", retain=True)  # leave no retained status behind on a shared broker


def test_agent_flushes_events_written_while_offline(
    make_config: Callable[..., ReceiverConfig],
    broker: Broker,
    collector: Callable[[list[str]], Collector],
    signing_key: object,
) -> None:
    config = make_config(mqtt_url=broker.url)
    rx = config.rx_id
    agent = Agent(config)
    try:
        agent.handle_message(topics.conf(rx), signed_conf(signing_key, rx, 1, [f"area/{unique()}"]))
        offline_events = [json.loads(p.payload) for p in agent.outbox.pending()]
        assert [e["type"] for e in offline_events] == ["conf.accepted"]
    finally:
        agent.stop()

    status = topics.rx_status(rx)
    sink = collector([topics.rx_events(rx), status])
    agent = Agent(config)
    try:
        assert agent.outbox.count() == 1  # survived the restart
        agent.start()
        wait_until(lambda: any(p == b"online" for p in sink.on(status)))
        wait_until(lambda: agent.outbox.count() == 0)
        delivered = [json.loads(p) for p in sink.on(topics.rx_events(rx))]
        assert offline_events[0]["id"] in [e["id"] for e in delivered]
    finally:
        agent.stop()
    wait_until(lambda: sink.on(status)[-1:] == [b"offline"])
    sink.publish(status, b"", retain=True)  # leave no retained status behind on a shared broker
