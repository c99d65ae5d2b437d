"""Thousands of simulated receivers in one process, driven by one thread (``loaxa-receiver sim --count N``).

Each :class:`SimReceiver` speaks protocol v1 like a real box: its own client
id, retained ``online``/``offline`` status, its signed conf (subscribing to the
scopes it lists), signed manifests (rollback refused) merged into one timeline,
signed commands (``ts`` window, nonce replay), and an outbox of events kept
until their PUBACK (paho's persistent session resends them after a cut).
Playback is simulated (the null sink): ``playback.started`` and
``playback.finished`` are reported at the times the local clock (with any
injected drift) says. Nothing decodes audio, so a receiver costs a few kB.

Faults can be injected per receiver: :meth:`SimReceiver.go_offline` (a network
cut: the will fires, events wait), :meth:`SimReceiver.amplifier_fault` and
:meth:`SimReceiver.drift` (its clock runs ahead or behind).

Signature checks are shared: a payload already verified by one receiver (the
same retained manifest reaches all of them) is not verified again; its parsed
manifest object is shared too.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from receiver.mqtt import client_id_for
from receiver.mqtt.pool import ClientPool, PooledClient
from receiver.untrusted import verify
from schedules import events, topics
from schedules.commands import TS_TOLERANCE_MS, Command, CommandError
from schedules.conf import ConfError, ReceiverConf
from schedules.manifest import Item, Manifest, ManifestError, merge
from schedules.signing import SignatureError, public_key_from_text

logger = logging.getLogger(__name__)

VERIFY_CACHE = 512


def _now_ms() -> float:
    return time.time_ns() / 1e6


class _Verifier:
    """Signature checks shared by every simulated receiver (same payload, same answer)."""

    def __init__(self, public_key_text: str) -> None:
        self.key = public_key_from_text(public_key_text)
        self._cache: OrderedDict[tuple[bytes, str, str], Any] = OrderedDict()

    def verify(self, payload: bytes, kind: str, scope: str) -> tuple[dict[str, Any], Any]:
        """``(body, parsed)`` or raises SignatureError / ManifestError / ConfError / CommandError."""
        key = (hashlib.sha256(payload).digest(), kind, scope)
        found = self._cache.get(key)
        if found is None:
            try:
                body = verify(self.key, payload, kind=kind, scope=scope)
                parsed: Any = {
                    "manifest": Manifest.from_body,
                    "conf": ReceiverConf.from_body,
                    "command": Command.from_body,
                }[kind](body)
                found = (body, parsed, None)
            except (SignatureError, ManifestError, ConfError, CommandError) as exc:
                found = (None, None, exc)
            self._cache[key] = found
            if len(self._cache) > VERIFY_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        if found[2] is not None:
            raise found[2]
        return found[0], found[1]


@dataclass(eq=False)
class SimReceiver:
    """One simulated receiver (all methods run in the pool's thread)."""

    rx: str
    swarm: Swarm
    extra_scopes: list[str]
    pc: PooledClient | None = None
    conf: ReceiverConf | None = None
    manifests: dict[str, Manifest] = field(default_factory=dict)
    nonces: dict[str, float] = field(default_factory=dict)
    outbox: dict[int, str] = field(default_factory=dict)
    """mid -> event id, until PUBACK."""
    drift_ms: float = 0.0
    amp_fault: bool = False
    playing: str | None = None
    played: set[tuple[str, int]] = field(default_factory=set)
    _generation: int = 0

    def scopes(self) -> list[str]:
        """Conf scopes (or the simulator's fixed ones), then its own."""
        scopes = list(self.conf.scopes) if self.conf is not None else list(self.extra_scopes)
        own = topics.rx_scope(self.rx)
        return [*scopes, own] if own not in scopes else scopes

    def now_ms(self) -> float:
        """This receiver's local clock (wall clock plus injected drift)."""
        return _now_ms() + self.drift_ms

    # ------------------------------------------------------------- network

    def on_connected(self, pc: PooledClient) -> None:
        """Subscribe to its conf, scopes and commands."""
        subs = [topics.conf(self.rx)]
        for scope in self.scopes():
            subs += [topics.sched(scope), topics.cmd(scope)]
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

    def on_message(self, pc: PooledClient, topic: str, payload: bytes) -> None:
        """Handle one message; never raises."""
        self.swarm.on_receive(self, topic, payload)
        try:
            if topic == topics.conf(self.rx):
                self._conf(payload)
            elif (scope := topics.scope_of_sched_topic(topic)) is not None:
                self._manifest(scope, payload)
            elif (scope := topics.scope_of_cmd_topic(topic)) is not None:
                self._command(scope, payload)
        except Exception:
            logger.exception("sim %s: error handling %s", self.rx, topic)

    def _conf(self, payload: bytes) -> None:
        try:
            _body, conf = self.swarm.verifier.verify(payload, "conf", topics.rx_scope(self.rx))
        except (SignatureError, ConfError) as exc:
            self.emit(events.FAULT_RAISED, fault="conf_refused", kind="conf", reason=str(exc))
            return
        if self.conf is not None and conf.version <= self.conf.version:
            return
        old = set(self.scopes())
        self.conf = conf
        added = [s for s in self.scopes() if s not in old]
        if self.pc is not None:
            self.pc.subscribe([t for s in added for t in (topics.sched(s), topics.cmd(s))])
        self.emit(events.CONF_ACCEPTED, version=conf.version, scopes=conf.scopes, volume=conf.volume)

    def _manifest(self, scope: str, payload: bytes) -> None:
        if scope not in self.scopes():
            return
        held = self.manifests.get(scope)
        try:
            _body, manifest = self.swarm.verifier.verify(payload, "manifest", scope)
        except (SignatureError, ManifestError) as exc:
            code = getattr(exc, "code", "manifest.malformed")
            self.emit(events.MANIFEST_REFUSED, scope=scope, code=code, reason=str(exc))
            return
        if held is not None and manifest.version <= held.version:
            if manifest.version < held.version:
                self.emit(
                    events.MANIFEST_REFUSED,
                    scope=scope,
                    code="manifest.rollback",
                    reason=f"version {manifest.version} is older than {held.version}",
                    held_version=held.version,
                )
            return
        self.manifests[scope] = manifest
        self.emit(events.MANIFEST_ACCEPTED, scope=scope, version=manifest.version, items=len(manifest.items))
        self.schedule_next()

    def _command(self, scope: str, payload: bytes) -> None:
        if scope not in self.scopes():
            return
        now = self.now_ms()
        try:
            body, command = self.swarm.verifier.verify(payload, "command", scope)
            command.check_time(int(now))
        except (SignatureError, CommandError) as exc:
            self.emit(events.COMMAND_REFUSED, scope=scope, code=exc.code, reason=str(exc))
            return
        for nonce in [n for n, until in self.nonces.items() if until < now]:
            del self.nonces[nonce]
        if command.nonce in self.nonces:
            self.emit(events.COMMAND_REFUSED, scope=scope, code="cmd.replay", action=command.action)
            return
        self.nonces[command.nonce] = command.ts + TS_TOLERANCE_MS
        self.emit(events.COMMAND_ACK, scope=scope, action=command.action, nonce=command.nonce)
        if command.action == "emergency":
            media = command.media
            item = Item(str(command.args["id"]), "", int(now), media.duration_ms, "emergency", media)
            self._start(scope, item, emergency=True)

    # ------------------------------------------------------------- playback

    def schedule_next(self) -> None:
        """Arm a timer for the next item of the merged timeline (replacing any armed before)."""
        self._generation += 1
        generation = self._generation
        widths = [(w, self.manifests[s]) for w, s in enumerate(self.scopes()) if s in self.manifests]
        timeline, _conflicts = merge(widths, rx_id=self.rx)
        now = self.now_ms()
        for scope, item in timeline:
            if item.end_ms > now and (item.id, item.start_ms) not in self.played:
                delay_ms = max(0.0, item.start_ms - now)

                def fire(scope: str = scope, item: Item = item) -> None:
                    if generation == self._generation:
                        self._start(scope, item)

                self.swarm.pool.call_later(delay_ms / 1000.0, fire)
                return

    def _start(self, scope: str, item: Item, emergency: bool = False) -> None:
        now = self.now_ms()
        self.played.add((item.id, item.start_ms))
        if item.media is None:  # silence, or a relay without fallback: nothing plays
            self.schedule_next()
            return
        offset = max(0, int(now - item.start_ms)) if not emergency else 0
        self.playing = item.id
        self.emit(
            events.PLAYBACK_STARTED,
            item_id=item.id,
            scope=scope,
            planned_start_ms=item.start_ms,
            actual_start_ms=int(now),
            offset_ms=offset if offset > 500 else 0,
            sha256=item.media.sha256,
            priority=item.priority,
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
        self.verifier = _Verifier(public_key)
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
