"""Thousands of simulated receivers in one process, driven by one thread (``loaxa-receiver sim --count N``).

Each :class:`SimReceiver` speaks protocol v1 like a real box, through the
same parts as the real agent: :class:`~receiver.holdings.Holdings` for its
signed conf and manifests (the same verdicts, rollbacks refused, one merged
timeline) and :class:`~receiver.gate.CommandGate` for signed commands
(``ts`` window, nonce replay; nonces kept in memory). It has its own client id,
retained ``online``/``offline`` status and an outbox of events kept until their
PUBACK (paho's persistent session resends them after a cut).
Playback is simulated (the null sink): ``playback.started`` and
``playback.finished`` are reported at the times the local clock (with any
injected drift) says. Nothing decodes audio, so a receiver costs a few kB.

Faults can be injected per receiver: :meth:`SimReceiver.go_offline` (a network
cut: the will fires, events wait), :meth:`SimReceiver.amplifier_fault` and
:meth:`SimReceiver.drift` (its clock runs ahead or behind).

Signature checks are shared: one :class:`~receiver.verifier.Verifier` with a
cache, so a payload already verified by one receiver (the same retained
manifest reaches all of them) is not verified again; its parsed manifest is
shared too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from receiver.gate import CommandGate, NonceMemory, ack_fields
from receiver.holdings import Event, Holdings, Verdict
from receiver.mqtt import client_id_for
from receiver.mqtt.pool import ClientPool, PooledClient
from receiver.verifier import Verifier
from schedules import events, topics
from schedules.conf import ReceiverConf
from schedules.manifest import Item, Manifest

logger = logging.getLogger(__name__)

VERIFY_CACHE = 512
"""Verdicts kept by the shared verifier (by payload hash)."""


def _now_ms() -> float:
    return time.time_ns() / 1e6


@dataclass(eq=False)
class SimReceiver:
    """One simulated receiver (all methods run in the pool's thread)."""

    rx: str
    swarm: Swarm
    extra_scopes: list[str]
    pc: PooledClient | None = None
    outbox: dict[int, str] = field(default_factory=dict)
    """mid -> event id, until PUBACK."""
    drift_ms: float = 0.0
    amp_fault: bool = False
    playing: str | None = None
    played: set[tuple[str, int]] = field(default_factory=set)
    alerts: set[str] = field(default_factory=set)
    """Ids of the alerts taken (by command or alert state): each plays once."""
    _generation: int = 0

    def __post_init__(self) -> None:
        self.holdings = Holdings(self.rx, self.swarm.verifier, fixed_scopes=self.extra_scopes)
        self.gate = CommandGate(self.rx, self.swarm.verifier, NonceMemory(), self.holdings.follows)

    @property
    def conf(self) -> ReceiverConf | None:
        """The conf in force."""
        return self.holdings.conf

    @property
    def manifests(self) -> dict[str, Manifest]:
        """The manifest held for each scope."""
        return self.holdings.manifests

    def scopes(self) -> list[str]:
        """Conf scopes (or the simulator's fixed ones), then its own."""
        return self.holdings.scopes()

    def now_ms(self) -> float:
        """This receiver's local clock (wall clock plus injected drift)."""
        return _now_ms() + self.drift_ms

    # ------------------------------------------------------------- network

    def on_connected(self, pc: PooledClient) -> None:
        """Subscribe to its conf, scopes and commands."""
        subs = [topics.conf(self.rx)]
        for scope in self.scopes():
            subs += topics.scope_topics(scope)
        pc.subscribe(subs)

    def on_published(self, pc: PooledClient, mid: int) -> None:
        """PUBACK: the event is delivered, forget it."""
        self.outbox.pop(mid, None)

    def emit(self, type_: str, **fields: Any) -> None:
        """Report an event (QoS 1, kept until PUBACK)."""
        event = events.make_event(self.rx, type_, **fields)
        assert self.pc is not None
        mid = self.pc.publish(topics.rx_events(self.rx), events.encode(event), qos=1)
        if mid is not None:
            self.outbox[mid] = event["id"]
        self.swarm.on_event(self, event)

    def _emit_all(self, pending: tuple[Event, ...]) -> None:
        for type_, fields in pending:
            self.emit(type_, **fields)

    def on_message(self, pc: PooledClient, topic: str, payload: bytes) -> None:
        """Handle one message; never raises."""
        self.swarm.on_receive(self, topic, payload)
        try:
            if topic == topics.conf(self.rx):
                self._conf(self.holdings.offer_conf(payload))
            elif (scope := topics.scope_of_sched_topic(topic)) is not None:
                self._held(self.holdings.offer_manifest(scope, payload))
            elif (scope := topics.scope_of_cmd_topic(topic)) is not None:
                self._command(scope, payload)
            elif (scope := topics.scope_of_alert_topic(topic)) is not None:
                self._alert_state(scope, payload)
        except Exception:
            logger.exception("sim %s: error handling %s", self.rx, topic)

    def _conf(self, verdict: Verdict) -> None:
        if self.pc is not None:
            self.pc.unsubscribe([t for s in verdict.removed for t in topics.scope_topics(s)])
            self.pc.subscribe([t for s in verdict.added for t in topics.scope_topics(s)])
        self._held(verdict)

    def _held(self, verdict: Verdict) -> None:
        self._emit_all(verdict.events)
        if verdict.accepted:
            self.schedule_next()

    def _command(self, scope: str, payload: bytes) -> None:
        now = self.now_ms()
        verdict = self.gate.check(scope, payload, int(now))
        self._emit_all(verdict.events)
        command = verdict.command
        if command is None:
            return
        ack = ack_fields(scope, command)
        if command.is_alert:
            item = replace(command.item(), start_ms=int(now))
            ack["item_id"] = item.id
            new = item.id not in self.alerts
            if not new:
                ack["already"] = True
            self.emit(events.COMMAND_ACK, **ack)
            if new:
                self.alerts.add(item.id)
                self._start(scope, item, emergency=True, mode=command.mode)
            return
        self.emit(events.COMMAND_ACK, **ack)

    def _alert_state(self, scope: str, payload: bytes) -> None:
        """A retained alert state: join the alert where it stands, once (an empty one: nothing to join)."""
        verdict = self.gate.check_alert(scope, payload, int(self.now_ms()))
        self._emit_all(verdict.events)
        command = verdict.command
        if command is None or command.item().id in self.alerts:
            return
        item = command.item()
        self.alerts.add(item.id)
        self.emit(events.COMMAND_ACK, **ack_fields(scope, command), item_id=item.id, joined=True)
        self._start(scope, item, emergency=True, mode=command.mode, join=True)

    # ------------------------------------------------------------- playback

    def schedule_next(self) -> None:
        """Arm a timer for the next item of the merged timeline (replacing any armed before)."""
        self._generation += 1
        generation = self._generation
        now = self.now_ms()
        for scope, item in self.holdings.timeline():
            if item.end_ms > now and (item.id, item.start_ms) not in self.played:
                delay_ms = max(0.0, item.start_ms - now)

                def fire(scope: str = scope, item: Item = item) -> None:
                    if generation == self._generation:
                        self._start(scope, item)

                self.swarm.pool.call_later(delay_ms / 1000.0, fire)
                return

    def _start(self, scope: str, item: Item, emergency: bool = False, mode: str = "", join: bool = False) -> None:
        now = self.now_ms()
        self.played.add((item.id, item.start_ms))
        if item.media is None and not emergency:  # silence, or a relay without fallback: nothing plays
            self.schedule_next()
            return
        offset = max(0, int(now - item.start_ms)) if not emergency or join else 0
        self.playing = item.id
        tags = {"mode": mode} if mode else {}
        self.emit(
            events.PLAYBACK_STARTED,
            item_id=item.id,
            scope=scope,
            planned_start_ms=item.start_ms,
            actual_start_ms=int(now),
            offset_ms=offset if offset > 500 else 0,
            priority=item.priority,
            **({"sha256": item.media.sha256} if item.media else {}),
            **tags,
        )
        duration = item.duration_ms - (offset if offset > 500 else 0)

        def finish() -> None:
            if self.playing == item.id:
                self.playing = None
            self.emit(
                events.PLAYBACK_FINISHED,
                item_id=item.id,
                scope=scope,
                planned_start_ms=item.start_ms,
                played_ms=duration,
                planned_duration_ms=item.duration_ms,
                end_reason="complete",
                **tags,
            )
            self.schedule_next()

        self.swarm.pool.call_later(duration / 1000.0, finish)

    # ------------------------------------------------------------- faults

    def go_offline(self, seconds: float) -> None:
        """Cut the network for ``seconds`` (events wait in the session and arrive after)."""
        if self.pc is not None:
            self.pc.cut(seconds)

    def amplifier_fault(self, on: bool = True) -> None:
        """Raise (or clear) an amplifier fault."""
        if on != self.amp_fault:
            self.amp_fault = on
            self.emit(events.FAULT_RAISED if on else events.FAULT_CLEARED, fault="amplifier_fault")

    def drift(self, ms: float) -> None:
        """Set the clock error of this receiver; raises or clears ``clock_unsynchronised`` at 100 ms."""
        was = abs(self.drift_ms) > 100
        self.drift_ms = ms
        if (abs(ms) > 100) != was:
            self.emit(
                events.FAULT_RAISED if abs(ms) > 100 else events.FAULT_CLEARED,
                fault="clock_unsynchronised",
                offset_ms=ms,
            )
        self.schedule_next()


class Swarm:
    """N simulated receivers on one :class:`ClientPool` thread."""

    def __init__(
        self,
        count: int,
        host: str,
        port: int,
        public_key: str,
        *,
        prefix: str = "sim-",
        scopes: list[str] | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        on_receive: Callable[[SimReceiver, str, bytes], object] | None = None,
        on_event: Callable[[SimReceiver, dict[str, Any]], object] | None = None,
    ) -> None:
        self.pool = ClientPool(host, port, tls=tls, ca_file=ca_file)
        self.verifier = Verifier(public_key, cache_size=VERIFY_CACHE)
        self._on_receive = on_receive
        self._on_event = on_event
        self.receivers: list[SimReceiver] = []
        width = max(4, len(str(count)))
        # ``username`` may hold ``{rx}`` (one login per receiver, e.g. "{rx}"): the client id is then that
        # login, as for a real receiver. A single login for many cannot work against a broker that sets
        # use_username_as_clientid (deploy/mosquitto/loaxa.conf): each connection would push out the last.
        shared = username is not None and "{rx}" not in username and count > 1
        if shared:
            logger.warning("swarm: one broker login %r for %d simulated receivers; a broker with "
                           "use_username_as_clientid keeps only one of them connected (use a username with {rx})",
                           username, count)
        for n in range(1, count + 1):
            rx = SimReceiver(f"{prefix}{n:0{width}d}", self, list(scopes or []))
            login = username.replace("{rx}", rx.rx) if username is not None else None
            # One login shared by many: distinct client ids (a broker with use_username_as_clientid keeps one).
            client_id = f"loaxa-rx-{rx.rx}" if shared else client_id_for(rx.rx, login)
            rx.pc = self.pool.add(
                client_id,
                will_topic=topics.rx_status(rx.rx),
                username=login,
                password=password,
                on_connected=rx.on_connected,
                on_message=rx.on_message,
                on_published=rx.on_published,
            )
            self.receivers.append(rx)

    def on_receive(self, rx: SimReceiver, topic: str, payload: bytes) -> None:
        """Hook for benchmarks: every message a receiver gets, before it is handled."""
        if self._on_receive is not None:
            self._on_receive(rx, topic, payload)

    def on_event(self, rx: SimReceiver, event: dict[str, Any]) -> None:
        """Hook for tests: every event a receiver reports."""
        if self._on_event is not None:
            self._on_event(rx, event)

    def receiver(self, rx_id: str) -> SimReceiver:
        """One simulated receiver by id; KeyError if absent."""
        for rx in self.receivers:
            if rx.rx == rx_id:
                return rx
        raise KeyError(rx_id)

    def start(self) -> None:
        """Connect everyone (spread over the first loop turns) and run the loop thread."""
        for rx in self.receivers:
            assert rx.pc is not None
            self.pool.call_soon(rx.pc.connect)
        self.pool.start()
        logger.info("simulator: %d receiver(s) started in one thread", len(self.receivers))

    def connected(self) -> int:
        """How many receivers are connected now."""
        return sum(1 for rx in self.receivers if rx.pc is not None and rx.pc.connected)

    def wait_connected(self, timeout: float = 30.0) -> bool:
        """Wait until every receiver is connected."""
        deadline = time.monotonic() + timeout
        while self.connected() < len(self.receivers):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def inject(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the simulator's thread (e.g. ``lambda: rx.go_offline(30)``)."""
        self.pool.call_soon(fn)

    def pending_events(self) -> int:
        """Events published but not yet acknowledged, over all receivers."""
        return sum(len(rx.outbox) for rx in self.receivers)

    def stop(self) -> None:
        """Say ``offline`` and disconnect everyone, end the thread."""
        self.pool.stop()
        logger.info("simulator: %d receiver(s) stopped", len(self.receivers))
