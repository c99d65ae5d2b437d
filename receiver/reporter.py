"""The reporter: every event through the outbox, each fault raised and cleared once, the heartbeat.

Events are written to the outbox (SQLite, :mod:`receiver.outbox`) before they
are published at QoS 1; a row stays until its PUBACK, and the whole outbox is
resent in order after every connect, so a play reported during a network cut
still reaches the controller. Faults are edge-triggered: one
``fault.raised`` when a condition appears and one ``fault.cleared`` when it
goes. The heartbeat (:class:`schedules.heartbeat.Heartbeat`, QoS 0) carries
what the controller's health view shows, and raises or clears the faults it
measures (clock, temperature, disk).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from receiver import __version__, health
from receiver.cache import MediaCache
from receiver.holdings import Event
from receiver.mqtt import MqttSession
from receiver.outbox import Outbox
from schedules import events, topics
from schedules.events import now_ms
from schedules.heartbeat import Heartbeat, Network

logger = logging.getLogger(__name__)


class Reporter:
    """One receiver's voice towards the controller."""

    def __init__(self, rx: str, outbox: Outbox, session: MqttSession, state_dir: Path, disk_reserve_mb: int,
                 ntp_server: str | None) -> None:
        self.rx = rx
        self.outbox = outbox
        self.session = session
        self._state_dir = state_dir
        self._reserve_bytes = disk_reserve_mb * 1024 * 1024
        self._ntp_server = ntp_server
        self._topic = topics.rx_events(rx)
        self._send_lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self.active_faults: set[str] = set()
        self._born = time.monotonic()

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Record an event in the outbox, then publish it (QoS 1) when connected."""
        event = events.make_event(self.rx, type_, **fields)
        payload = events.encode(event)
        seq = self.outbox.add(self._topic, payload, qos=1, event_id=event["id"])
        logger.info("rx %s: event %s %s", self.rx, type_, json.dumps(fields, ensure_ascii=False, sort_keys=True))
        with self._send_lock:
            mid = self.session.publish(self._topic, payload, qos=1)
            if mid is not None:
                self.outbox.mark_sent(seq, mid)
        return event

    def emit_all(self, pending: tuple[Event, ...]) -> None:
        """Report the events of a verdict, in order."""
        for type_, fields in pending:
            self.emit(type_, **fields)

    def flush(self) -> int:
        """(Re)send every pending event in order; returns how many were handed to the broker."""
        sent = 0
        with self._send_lock:
            for row in self.outbox.pending():
                mid = self.session.publish(row.topic, row.payload, qos=row.qos)
                if mid is None:
                    break
                self.outbox.mark_sent(row.seq, mid)
                sent += 1
        if sent:
            logger.info("rx %s: outbox flushed %d event(s)", self.rx, sent)
        return sent

    def acked(self, mid: int) -> None:
        """The broker acknowledged the message ``mid`` (paho's thread)."""
        self.outbox.ack(mid)

    def set_fault(self, fault: str, active: bool, **fields: Any) -> None:
        """Raise a fault when it appears and clear it when it goes (one event per change)."""
        with self._fault_lock:
            if active == (fault in self.active_faults):
                return
            if active:
                self.active_faults.add(fault)
            else:
                self.active_faults.discard(fault)
        self.emit(events.FAULT_RAISED if active else events.FAULT_CLEARED, fault=fault, **fields)

    def heartbeat(self, *, manifests: dict[str, int], playing: str | None, volume: int,
                  cache: MediaCache) -> dict[str, Any]:
        """Build the heartbeat, raise or clear the faults it shows, publish it (QoS 0) when connected."""
        try:
            disk_free: int | None = shutil.disk_usage(self._state_dir).free
        except OSError:
            disk_free = None
        offset = health.chrony_offset_ms()
        if offset is None and self._ntp_server:
            offset = health.sntp_offset_ms(self._ntp_server)
        temperature = health.cpu_temperature_c()
        disk = health.disk(self._state_dir)
        self.set_fault("clock_unsynchronised", offset is not None and abs(offset) > health.CLOCK_FAULT_MS,
                       offset_ms=offset)
        self.set_fault("overheating", temperature is not None and temperature > health.OVERHEAT_C,
                       temperature_c=temperature)
        self.set_fault("disk_nearly_full", disk_free is not None and disk_free < 2 * self._reserve_bytes,
                       free_bytes=disk_free)
        net = health.network()
        beat = Heartbeat(
            rx=self.rx,
            ts=now_ms(),
            uptime_s=round(time.monotonic() - self._born, 1),
            version=__version__,
            manifests=manifests,
            playing=playing,
            volume=volume,
            cache_files=cache.count(),
            cache_bytes=cache.size(),
            disk_total_bytes=disk["total_bytes"] if disk else None,
            disk_free_bytes=disk_free,
            clock_offset_ms=None if offset is None else round(offset, 1),
            temperature_c=temperature,
            network=Network(type=net.get("type"), signal_pct=net.get("signal_pct"), rssi_dbm=net.get("rssi_dbm"),
                            tech=net.get("tech"), interface=net.get("interface")),
            faults=tuple(sorted(self.active_faults)),
        )
        self.session.publish(topics.rx_hb(self.rx), beat.encode(), qos=0)
        return beat.body()
