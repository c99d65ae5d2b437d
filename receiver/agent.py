"""The receiver agent: ties the MQTT session, verification, cache, player and outbox together.

Threads (all owned by one :class:`Agent`):

- paho's network thread (:mod:`receiver.mqtt`) only enqueues what arrives and
  acknowledges outbox rows on PUBACK;
- the *dispatcher* handles the queue in order: (re)subscriptions and the outbox
  flush after every connect, then conf and manifest messages
  (:meth:`Agent.handle_message`, which never raises);
- the *downloader* fetches every media file the held manifests name, soonest
  first, retrying failures with backoff;
- the *player* walks the merged timeline of all held manifests and plays each
  item at its second by the local clock;
- the *heartbeat* publishes the agent's health every ``heartbeat_s``.

State under ``state_dir``: ``outbox.db``, ``nonces.db`` (nonces of obeyed
commands, the replay guard), ``media/``, ``conf.json`` (last good signed conf)
and ``manifests/<scope, url-quoted>.json`` (last good signed manifest of each
scope), so a restart with the broker down still plays.

Commands (:mod:`schedules.commands`) are verified (signature, kind and scope,
``ts`` window, expiry, nonce) and every refusal is reported as a
``command.refused`` event. An ``emergency`` pre-empts the item playing (which
is then rejoined where the schedule stands), ``stop`` ends what plays,
``volume`` sets the programme volume, ``resync`` re-subscribes and resends,
``test_tone`` plays a sine at the programme volume (:meth:`Agent.play_tone`).
Relay items play a live stream (:meth:`Agent.play_relay`); a decoder that dies
in the middle of an item is restarted where the item stands and reported as
the ``player_crashed`` fault. While an item plays, the output's position is held to the system clock
(:meth:`Agent._correct_drift`); the amplifier relay is switched around
sessions (:mod:`receiver.hardware`); systemd gets READY/WATCHDOG
(:mod:`receiver.systemd`).
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from receiver import __version__, health, systemd, tone
from receiver.cache import DownloadCancelled, DownloadError, MediaCache, write_atomic
from receiver.config import ReceiverConfig
from receiver.decoder import Decoder, DecoderError
from receiver.files import private_dir
from receiver.hardware import Hardware, HardwareError
from receiver.mqtt import MqttSession
from receiver.nonces import NonceStore
from receiver.outbox import Outbox
from receiver.relay import RETRY_MIN_S, RelayStream
from receiver.sinks import Output, Sink, SinkError, make_sink
from receiver.untrusted import verify
from schedules import events, topics
from schedules.commands import TS_TOLERANCE_MS, Command, CommandError
from schedules.conf import ConfError, ReceiverConf
from schedules.heartbeat import Heartbeat, Network
from schedules.manifest import Item, Manifest, ManifestError, MediaRef, merge
from schedules.signing import SignatureError, public_key_from_text

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44100
CHANNELS = 1
CHUNK_MS = 100
PREBUFFER_MS = 1000
JOIN_LEAD_MS = 300
"""When joining an item already under way, how far ahead the first sample is placed."""
LATE_START_TOLERANCE_MS = 500
"""A start missed by at most this much plays from the beginning instead of being joined at an offset."""
DRIFT_TOLERANCE_MS = 2.0
"""Drift between the output's clock and the system clock tolerated before frames are inserted or dropped."""
SPIN_S = 0.015
"""The last part of the wait before a start is spent spinning on the clock, not sleeping."""
DOWNLOAD_RETRY_MIN_S = 5.0
DOWNLOAD_RETRY_MAX_S = 300.0
IDLE_WAIT_S = 60.0
PLAYED_MEMORY_MS = 24 * 3600 * 1000
MAX_DECODER_RESTARTS = 3
"""A decoder that dies more often than this in one item ends the item (``decoder_error``): a bad file, not bad luck."""
CRASH_END_MARGIN_MS = 500
"""A decoder that dies this close to the end of its media has finished, not crashed."""
RELAY_BUFFER_MS = 500
"""Stream audio buffered before it plays (at the start and after every underrun): absorbs network jitter."""
RELAY_RETURN_S = 3.0
"""While the fallback plays, the stream must have delivered audio this long without a break before it takes over."""
RELAY_STALL_S = 5.0
"""A stream silent this long while the player has nothing left is restarted (at most half the fallback grace)."""
RELAY_RETRY_MAX_S = 4.0
"""Longest wait between reconnection attempts (at most half the fallback grace, so a stream that is back is found)."""


@dataclass
class _Prepared:
    key: tuple[str, int]
    decoder: Decoder
    buffer: bytes


def _frames(ms: float) -> int:
    """Bytes of whole PCM frames lasting ``ms`` milliseconds (never negative)."""
    frame = 2 * CHANNELS
    return max(0, int(ms * SAMPLE_RATE / 1000)) * frame


@dataclass
class _Emergency:
    """An accepted emergency command waiting to play (or playing)."""

    scope: str
    command: Command
    item: Item
    volume: int


@dataclass
class _Tone:
    """An accepted ``test_tone`` command waiting to play (or playing)."""

    scope: str
    command: Command
    duration_s: int
    frequency_hz: int


@dataclass
class _Failure:
    attempts: int = 0
    retry_at: float = 0.0
    raised: bool = False
    code: str = ""


def _download_fault(code: str) -> str:
    """The fault a failed download raises: a full disk, a bad checksum, or any other failure."""
    return {"download.disk_full": "disk_full", "download.checksum": "checksum_mismatch"}.get(code, "download_failed")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _now_ms_f() -> float:
    return time.time_ns() / 1_000_000


class Agent:
    """One receiver: connect, verify, fetch, play on time, report."""

    def __init__(self, config: ReceiverConfig, sink: Sink | None = None) -> None:
        self.config = config
        self.rx = config.rx_id
        self.state_dir = Path(config.state_dir)
        self.manifest_dir = self.state_dir / "manifests"
        private_dir(self.state_dir)
        private_dir(self.manifest_dir)
        self._public_key = public_key_from_text(config.controller_public_key)
        if sink is None:
            sink = make_sink(config.sink, config.effective_sink_dir, config.sink_rate_ppm, config.alsa_device)
        self.sink = sink
        self.outbox = Outbox(self.state_dir / "outbox.db")
        self.nonces = NonceStore(self.state_dir / "nonces.db")
        self.cache = MediaCache(
            self.state_dir / "media",
            config.media_base_url,
            config.token,
            max_bytes=config.cache_max_mb * 1024 * 1024,
            reserve_bytes=config.disk_reserve_mb * 1024 * 1024,
        )
        broker = config.broker
        self.session = MqttSession(
            self.rx,
            broker.host,
            broker.port,
            tls=broker.tls,
            username=broker.username,
            password=broker.password,
            ca_file=config.mqtt_ca_file,
            on_connected=self._on_connected,
            on_message=self._on_message,
            on_published=self._on_published,
        )
        self._events_topic = topics.rx_events(self.rx)
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._conf: ReceiverConf | None = None
        self._manifests: dict[str, Manifest] = {}
        self._generation = 0
        self._timeline_cache: tuple[int, list[tuple[str, Item]]] = (-1, [])
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._player_wake = threading.Event()
        self._download_wake = threading.Event()
        self._played: dict[tuple[str, int], int] = {}
        self._playing: Item | None = None
        self._output: Output | None = None
        self._prepared: _Prepared | None = None
        self._failures: dict[str, _Failure] = {}
        self._emergency: _Emergency | None = None
        self._tone: _Tone | None = None
        self._stop_current = threading.Event()
        self._volume: int | None = None
        self._active_faults: set[str] = set()
        self._last_play_end_ms = 0
        self.hardware: Hardware | None = None
        try:
            self.hardware = Hardware(
                amp_pin=config.amp_pin,
                fault_pins=dict(config.fault_pins),
                on_fault=self._on_fault_input,
                mock=config.gpio_mock,
            )
        except HardwareError as exc:
            logger.error("rx %s: no GPIO, running without relay and fault inputs: %s", self.rx, exc)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopped = False
        self._born = time.monotonic()
        self._load_state()

    # ------------------------------------------------------------------ state

    @property
    def conf(self) -> ReceiverConf | None:
        """The configuration in force (None until the first valid one)."""
        with self._lock:
            return self._conf

    @property
    def manifests(self) -> dict[str, Manifest]:
        """The manifest held for each scope."""
        with self._lock:
            return dict(self._manifests)

    @property
    def playing(self) -> str | None:
        """The id of the item playing now, or None."""
        item = self._playing
        return item.id if item is not None else None

    def scopes(self) -> list[str]:
        """The scopes this receiver follows, widest first; its own ``rx/<id>`` is always last."""
        with self._lock:
            scopes = list(self._conf.scopes) if self._conf is not None else []
        own = topics.rx_scope(self.rx)
        if own not in scopes:
            scopes.append(own)
        return scopes

    def _manifest_path(self, scope: str) -> Path:
        return self.manifest_dir / f"{quote(scope, safe='')}.json"

    def _load_state(self) -> None:
        conf_path = self.state_dir / "conf.json"
        if conf_path.exists():
            try:
                body = verify(self._public_key, conf_path.read_bytes(), kind="conf", scope=topics.rx_scope(self.rx))
                self._conf = ReceiverConf.from_body(body)
                logger.info("rx %s: loaded conf v%d (scopes %s)", self.rx, self._conf.version, self._conf.scopes)
            except (OSError, SignatureError, ConfError) as exc:
                logger.warning("rx %s: ignoring stored conf %s: %s", self.rx, conf_path, exc)
        for scope in self.scopes():
            self._load_manifest(scope)

    def _load_manifest(self, scope: str) -> None:
        path = self._manifest_path(scope)
        if not path.exists():
            return
        try:
            body = verify(self._public_key, path.read_bytes(), kind="manifest", scope=scope)
            manifest = Manifest.from_body(body)
        except (OSError, SignatureError, ManifestError) as exc:
            logger.warning("rx %s: ignoring stored manifest %s: %s", self.rx, path, exc)
            return
        with self._lock:
            self._manifests[scope] = manifest
            self._generation += 1
        logger.info("rx %s: loaded manifest %s v%d (%d items)", self.rx, scope, manifest.version, len(manifest.items))

    # ---------------------------------------------------------------- events

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Record an event in the outbox, then publish it (QoS 1) when connected."""
        event = events.make_event(self.rx, type_, **fields)
        payload = events.encode(event)
        seq = self.outbox.add(self._events_topic, payload, qos=1, event_id=event["id"])
        logger.info("rx %s: event %s %s", self.rx, type_, json.dumps(fields, ensure_ascii=False, sort_keys=True))
        with self._send_lock:
            mid = self.session.publish(self._events_topic, payload, qos=1)
            if mid is not None:
                self.outbox.mark_sent(seq, mid)
        return event

    def flush_outbox(self) -> int:
        """(Re)send every pending event in order; returns how many were handed to the broker."""
        sent = 0
        with self._send_lock:
            for pending in self.outbox.pending():
                mid = self.session.publish(pending.topic, pending.payload, qos=pending.qos)
                if mid is None:
                    break
                self.outbox.mark_sent(pending.seq, mid)
                sent += 1
        if sent:
            logger.info("rx %s: outbox flushed %d event(s)", self.rx, sent)
        return sent

    def heartbeat(self) -> dict[str, Any]:
        """Build the heartbeat, raise or clear the faults it shows, publish it (QoS 0) when connected."""
        with self._lock:
            versions = {scope: m.version for scope, m in self._manifests.items()}
        try:
            disk_free = shutil.disk_usage(self.state_dir).free
        except OSError:
            disk_free = None
        offset = health.chrony_offset_ms()
        if offset is None and self.config.ntp_server:
            offset = health.sntp_offset_ms(self.config.ntp_server)
        temperature = health.cpu_temperature_c()
        disk = health.disk(self.state_dir)
        faults_now = self._heartbeat_faults(offset, temperature, disk_free)
        net = health.network()
        beat = Heartbeat(
            rx=self.rx,
            ts=_now_ms(),
            uptime_s=round(time.monotonic() - self._born, 1),
            version=__version__,
            manifests=versions,
            playing=self.playing,
            volume=self.volume,
            cache_files=self.cache.count(),
            cache_bytes=self.cache.size(),
            disk_total_bytes=disk["total_bytes"] if disk else None,
            disk_free_bytes=disk_free,
            clock_offset_ms=None if offset is None else round(offset, 1),
            temperature_c=temperature,
            network=Network(type=net.get("type"), signal_pct=net.get("signal_pct"), rssi_dbm=net.get("rssi_dbm"),
                            tech=net.get("tech"), interface=net.get("interface")),
            faults=faults_now,
        )
        self.session.publish(topics.rx_hb(self.rx), beat.encode(), qos=0)
        return beat.body()

    def _heartbeat_faults(self, offset: float | None, temperature: float | None,
                          disk_free: int | None) -> tuple[str, ...]:
        """Raise or clear the faults a heartbeat shows; the active faults after."""
        self._set_fault("clock_unsynchronised", offset is not None and abs(offset) > health.CLOCK_FAULT_MS,
                        offset_ms=offset)
        self._set_fault("overheating", temperature is not None and temperature > health.OVERHEAT_C,
                        temperature_c=temperature)
        reserve = self.config.disk_reserve_mb * 1024 * 1024
        self._set_fault("disk_nearly_full", disk_free is not None and disk_free < 2 * reserve, free_bytes=disk_free)
        return tuple(sorted(self._active_faults))

    def _on_fault_input(self, fault: str, active: bool) -> None:
        """A hardware fault input changed (called from gpiozero's thread)."""
        try:
            self._set_fault(fault, active, source="gpio")
        except Exception:
            logger.exception("rx %s: cannot report fault input %s", self.rx, fault)

    def _set_fault(self, fault: str, active: bool, **fields: Any) -> None:
        """Raise a fault when it appears and clear it when it goes (one event per change)."""
        if active and fault not in self._active_faults:
            self._active_faults.add(fault)
            self.emit(events.FAULT_RAISED, fault=fault, **fields)
        elif not active and fault in self._active_faults:
            self._active_faults.discard(fault)
            self.emit(events.FAULT_CLEARED, fault=fault, **fields)

    # ------------------------------------------------------- paho callbacks

    def _on_connected(self) -> None:
        self._inbox.put(("connected",))

    def _on_message(self, topic: str, payload: bytes) -> None:
        self._inbox.put(("message", topic, payload))

    def _on_published(self, mid: int) -> None:
        self.outbox.ack(mid)

    # -------------------------------------------------------------- messages

    def _after_connect(self) -> None:
        self.session.subscribe(topics.conf(self.rx), 1)
        for scope in self.scopes():
            self.session.subscribe(topics.sched(scope), 1)
            self.session.subscribe(topics.cmd(scope), 1)
        self.flush_outbox()
        self.heartbeat()

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Act on one message from the broker; logs and drops anything wrong, never raises."""
        try:
            if topic == topics.conf(self.rx):
                self._handle_conf(payload)
                return
            scope = topics.scope_of_sched_topic(topic)
            if scope is not None:
                self._handle_sched(scope, payload)
                return
            scope = topics.scope_of_cmd_topic(topic)
            if scope is not None:
                self._handle_cmd(scope, payload)
                return
            logger.debug("rx %s: ignoring message on unknown topic %s", self.rx, topic)
        except Exception:
            logger.exception("rx %s: error handling a message on %s", self.rx, topic)

    def _handle_conf(self, payload: bytes) -> None:
        try:
            body = verify(self._public_key, payload, kind="conf", scope=topics.rx_scope(self.rx))
            conf = ReceiverConf.from_body(body)
            if conf.rx != self.rx:
                raise ConfError(f"conf is for receiver {conf.rx!r}")
        except SignatureError as exc:
            logger.warning("rx %s: refused conf: %s (%s)", self.rx, exc, exc.code)
            fault = "signature_refused" if exc.code.startswith("sig.") else "conf_refused"
            self.emit(events.FAULT_RAISED, fault=fault, kind="conf", code=exc.code, reason=str(exc))
            return
        except ConfError as exc:
            logger.warning("rx %s: refused conf: %s", self.rx, exc)
            self.emit(events.FAULT_RAISED, fault="conf_refused", kind="conf", code="conf.malformed", reason=str(exc))
            return
        with self._lock:
            held = self._conf
            if held is not None and conf.version < held.version:
                reason = f"conf version {conf.version} is older than the held version {held.version}"
                logger.warning("rx %s: refused conf: %s", self.rx, reason)
                rollback = True
            else:
                rollback = False
                if held is not None and conf.version == held.version:
                    logger.debug("rx %s: conf v%d already held", self.rx, conf.version)
                    return
                old_scopes = self.scopes()
                self._conf = conf
                new_scopes = self.scopes()
                removed = [s for s in old_scopes if s not in new_scopes]
                added = [s for s in new_scopes if s not in old_scopes]
                for scope in removed:
                    self._manifests.pop(scope, None)
                self._generation += 1
        if rollback:
            self.emit(events.FAULT_RAISED, fault="conf_refused", kind="conf", code="conf.rollback", reason=reason)
            return
        try:
            write_atomic(self.state_dir / "conf.json", payload)
        except OSError as exc:
            logger.error("rx %s: cannot store conf: %s", self.rx, exc)
        for scope in removed:
            self._manifest_path(scope).unlink(missing_ok=True)
            self.session.unsubscribe(topics.sched(scope))
            self.session.unsubscribe(topics.cmd(scope))
        for scope in added:
            self._load_manifest(scope)
            self.session.subscribe(topics.sched(scope), 1)
            self.session.subscribe(topics.cmd(scope), 1)
        logger.info("rx %s: conf v%d accepted; scopes %s", self.rx, conf.version, conf.scopes)
        self.emit(events.CONF_ACCEPTED, version=conf.version, scopes=conf.scopes, volume=conf.volume)
        self._download_wake.set()
        self._player_wake.set()

    def _refuse_manifest(self, scope: str, code: str, reason: str, *, signature: bool = False) -> None:
        held = self.manifests.get(scope)
        logger.warning(
            "rx %s: refused manifest for %s: %s (%s); %s",
            self.rx,
            scope,
            reason,
            code,
            f"keeping v{held.version}" if held else "none held",
        )
        self.emit(
            events.MANIFEST_REFUSED,
            scope=scope,
            code=code,
            reason=reason,
            held_version=held.version if held else None,
        )
        if signature:
            self.emit(
                events.FAULT_RAISED, fault="signature_refused", kind="manifest", scope=scope, code=code, reason=reason
            )

    def _handle_sched(self, scope: str, payload: bytes) -> None:
        if scope not in self.scopes():
            logger.debug("rx %s: ignoring manifest for %s, not one of its scopes", self.rx, scope)
            return
        try:
            body = verify(self._public_key, payload, kind="manifest", scope=scope)
        except SignatureError as exc:
            self._refuse_manifest(scope, exc.code, str(exc), signature=exc.code.startswith("sig."))
            return
        try:
            manifest = Manifest.from_body(body)
        except ManifestError as exc:
            self._refuse_manifest(scope, "manifest.malformed", str(exc))
            return
        with self._lock:
            held = self._manifests.get(scope)
            if held is not None and manifest.version == held.version:
                logger.debug("rx %s: manifest %s v%d already held", self.rx, scope, manifest.version)
                return
            rollback = held is not None and manifest.version < held.version
        if rollback:
            assert held is not None
            self._refuse_manifest(
                scope,
                "manifest.rollback",
                f"version {manifest.version} is older than the held version {held.version}",
            )
            return
        try:
            write_atomic(self._manifest_path(scope), payload)
        except OSError as exc:
            logger.error("rx %s: cannot store manifest %s: %s", self.rx, scope, exc)
        with self._lock:
            self._manifests[scope] = manifest
            self._generation += 1
        self.emit(
            events.MANIFEST_ACCEPTED,
            scope=scope,
            version=manifest.version,
            items=len(manifest.items),
            content_hash=manifest.content_hash(),
        )
        self._download_wake.set()
        self._player_wake.set()

    def _handle_cmd(self, scope: str, payload: bytes) -> None:
        if scope not in self.scopes():
            logger.debug("rx %s: ignoring command for %s, not one of its scopes", self.rx, scope)
            return
        try:
            body = verify(self._public_key, payload, kind="command", scope=scope)
        except SignatureError as exc:
            self._refuse_command(scope, None, exc.code, str(exc), signature=exc.code.startswith("sig."))
            return
        now = _now_ms()
        try:
            command = Command.from_body(body)
            command.check_time(now)
        except CommandError as exc:
            self._refuse_command(scope, body, exc.code, str(exc))
            return
        # Remembered (durably) before it is obeyed: a replay after a power cut is still refused.
        if not self.nonces.add(command.nonce, command.ts + TS_TOLERANCE_MS, now):
            self._refuse_command(scope, body, "cmd.replay", f"nonce {command.nonce} was already used")
            return
        logger.info("rx %s: command %s on %s accepted (nonce %s)", self.rx, command.action, scope, command.nonce)
        ack: dict[str, Any] = {"scope": scope, "action": command.action, "nonce": command.nonce}
        if command.action == "emergency":
            item = self._emergency_item(command)
            with self._lock:
                volume = command.volume if command.volume is not None else 100
                self._emergency = _Emergency(scope, command, item, volume)
            ack["item_id"] = item.id
            self._download_wake.set()
        elif command.action == "stop":
            with self._lock:
                emergency, self._emergency = self._emergency, None
                pending_tone, self._tone = self._tone, None
            if self._playing is not None:
                self._stop_current.set()
            ack["stopped"] = self.playing or (emergency.item.id if emergency else None)
            if pending_tone is not None:
                self.emit(events.TEST_TONE_FINISHED, scope=pending_tone.scope, nonce=pending_tone.command.nonce,
                          played_ms=0, end_reason="stopped_by_command")
        elif command.action == "test_tone":
            busy = self._emergency_busy()
            if busy is not None:
                self._refuse_command(scope, body, "cmd.busy", f"emergency {busy} is playing; no test tone over it")
                return
            new = _Tone(scope, command, command.tone_duration_s, command.tone_frequency_hz)
            with self._lock:
                self._tone = new
            ack.update(duration_s=new.duration_s, frequency_hz=new.frequency_hz)
        elif command.action == "volume":
            self._volume = command.volume
            output = self._output
            if output is not None and (self._playing is None or self._playing.priority != "emergency"):
                output.set_volume(self.volume)
            ack["volume"] = command.volume
        elif command.action == "resync":
            self._inbox.put(("connected",))
        self.emit(events.COMMAND_ACK, **ack)
        self._player_wake.set()

    def _emergency_busy(self) -> str | None:
        """The id of the emergency playing, or about to (accepted and its media here), else None."""
        playing = self._playing
        if playing is not None and playing.priority == "emergency":
            return playing.id
        emergency = self._emergency
        if emergency is not None and self.cache.path(emergency.item.media.sha256) is not None:
            return emergency.item.id
        return None

    @staticmethod
    def _emergency_item(command: Command) -> Item:
        args = command.args
        media = command.media
        return Item(
            id=str(args["id"]),
            title=str(args.get("title", ""))[:300],
            start_ms=command.ts,
            duration_ms=int(args.get("duration_ms", media.duration_ms)),
            priority="emergency",
            media=media,
        )

    def _refuse_command(
        self, scope: str, body: dict[str, Any] | None, code: str, reason: str, *, signature: bool = False
    ) -> None:
        body = body or {}
        logger.warning("rx %s: refused command on %s: %s (%s)", self.rx, scope, reason, code)
        self.emit(
            events.COMMAND_REFUSED,
            scope=scope,
            action=body.get("action") if isinstance(body.get("action"), str) else None,
            nonce=body.get("nonce") if isinstance(body.get("nonce"), str) else None,
            code=code,
            reason=reason,
        )
        if signature:
            self.emit(
                events.FAULT_RAISED, fault="signature_refused", kind="command", scope=scope, code=code, reason=reason
            )

    @property
    def volume(self) -> int:
        """The programme volume: the last ``volume`` command, else the conf's, else 80."""
        if self._volume is not None:
            return self._volume
        conf = self.conf
        return conf.volume if conf is not None else 80

    # -------------------------------------------------------------- timeline

    def timeline(self) -> list[tuple[str, Item]]:
        """The merged timeline of every held manifest, ``[(scope, item)]`` by start."""
        with self._lock:
            generation = self._generation
            if self._timeline_cache[0] == generation:
                return self._timeline_cache[1]
            scopes = self.scopes()
            held = [(width, self._manifests[s]) for width, s in enumerate(scopes) if s in self._manifests]
        merged, conflicts = merge(held, rx_id=self.rx)  # items that exclude this receiver are left out
        for c in conflicts:
            logger.info(
                "rx %s: item %s of %s at %d loses to %s of %s: %s",
                self.rx,
                c.loser.id,
                c.loser_scope,
                c.loser.start_ms,
                c.winner.id,
                c.winner_scope,
                c.reason,
            )
        with self._lock:
            self._timeline_cache = (generation, merged)
        return merged

    def next_item(self, now_ms: int | None = None) -> tuple[str, Item] | None:
        """The next ``(scope, item)`` still to play: not yet ended and not played in this run."""
        now = _now_ms() if now_ms is None else now_ms
        for scope, item in self.timeline():
            if item.end_ms > now and (item.id, item.start_ms) not in self._played:
                return scope, item
        return None

    # ------------------------------------------------------------ downloader

    def _wanted_media(self) -> list[MediaRef]:
        now = _now_ms()
        with self._lock:
            items = [i for m in self._manifests.values() for i in m.items if i.end_ms > now]
        wanted: dict[str, MediaRef] = {}
        emergency = self._emergency
        if emergency is not None:
            wanted[emergency.item.media.sha256] = emergency.item.media
        for item in sorted(items, key=lambda i: i.start_ms):
            if item.media is not None:  # a silence separator, or a relay without fallback, needs no file
                wanted.setdefault(item.media.sha256, item.media)
        return list(wanted.values())

    def _download_step(self) -> float:
        now = time.monotonic()
        next_retry: float | None = None
        for ref in self._wanted_media():
            if self._stop.is_set():
                return 0.0
            if self.cache.path(ref.sha256) is not None:
                continue
            failure = self._failures.get(ref.sha256)
            if failure is not None and failure.retry_at > now:
                next_retry = failure.retry_at if next_retry is None else min(next_retry, failure.retry_at)
                continue
            self._download(ref)
            return 0.0
        return IDLE_WAIT_S if next_retry is None else max(0.05, min(next_retry - now, IDLE_WAIT_S))

    def _download(self, ref: MediaRef) -> None:
        try:
            self.cache.make_room(ref.bytes, keep={m.sha256 for m in self._wanted_media()})
            self.cache.fetch(ref, should_stop=self._stop.is_set)
        except DownloadCancelled:
            return
        except Exception as exc:  # DownloadError, or anything unexpected: retry later either way
            code = exc.code if isinstance(exc, DownloadError) else "download.error"
            reason = exc.args[0] if isinstance(exc, DownloadError) else f"{type(exc).__name__}: {exc}"
            failure = self._failures.setdefault(ref.sha256, _Failure())
            failure.attempts += 1
            failure.code = code
            delay = min(DOWNLOAD_RETRY_MIN_S * 2 ** (failure.attempts - 1), DOWNLOAD_RETRY_MAX_S)
            failure.retry_at = time.monotonic() + delay
            logger.warning(
                "rx %s: download of %s failed (attempt %d): %s %s; retrying in %.0f s",
                self.rx,
                ref.path,
                failure.attempts,
                code,
                reason,
                delay,
            )
            if not failure.raised:
                failure.raised = True
                self.emit(
                    events.FAULT_RAISED,
                    fault=_download_fault(code),
                    sha256=ref.sha256,
                    path=ref.path,
                    code=code,
                    reason=reason,
                )
            return
        cleared = self._failures.pop(ref.sha256, None)
        if cleared is not None and cleared.raised:
            self.emit(events.FAULT_CLEARED, fault=_download_fault(cleared.code), sha256=ref.sha256, path=ref.path)
        for sha, failure in list(self._failures.items()):
            if failure.raised and failure.code == "download.disk_full":  # space is back
                del self._failures[sha]
                self.emit(events.FAULT_CLEARED, fault="disk_full", sha256=sha)
        self._player_wake.set()

    def _downloader_loop(self) -> None:
        while not self._stop.is_set():
            self._download_wake.clear()
            try:
                wait_s = self._download_step()
            except Exception:
                logger.exception("rx %s: downloader error", self.rx)
                wait_s = DOWNLOAD_RETRY_MIN_S
            if wait_s > 0:
                self._download_wake.wait(wait_s)

    # ---------------------------------------------------------------- player

    def _player_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._player_wake.clear()
                try:
                    wait_s = self._player_step()
                except Exception:
                    logger.exception("rx %s: player error", self.rx)
                    wait_s = 1.0
                if wait_s > 0:
                    self._player_wake.wait(wait_s)
        finally:
            self._discard_prepared()

    def _player_step(self) -> float:
        """Play the next item when its preroll begins; returns how long to wait before looking again."""
        now = _now_ms()
        self._forget_old_plays(now)
        emergency = self._emergency
        if emergency is not None:
            wait_s = self._emergency_step(emergency, now)
            if wait_s is not None:
                return wait_s
        pending_tone = self._tone
        if pending_tone is not None:
            self.play_tone(pending_tone)
            return 0.0
        nxt = self.next_item(now)
        if nxt is None:
            self._discard_prepared()
            return min(IDLE_WAIT_S, self._drive_amplifier(None, now))
        scope, item = nxt
        hold_wait = self._drive_amplifier(item, now)
        lead_ms = item.start_ms - self.config.preroll_ms - now
        if lead_ms > 0:
            self._discard_prepared()
            warmup_ms = self.config.amp_warmup_s * 1000 if self._amp_waits() else 0
            return max(0.0, min((lead_ms - warmup_ms) / 1000.0, IDLE_WAIT_S, hold_wait))
        if item.kind == "relay" and item.url:
            if item.media is not None:
                self.cache.touch(item.media.sha256)
            self.play_relay(scope, item)
            return 0.0
        if item.media is None:
            # Silence (a separator): nothing to play; its slot stays quiet.
            self._played[(item.id, item.start_ms)] = item.end_ms
            return 0.0
        path = self.cache.path(item.media.sha256)
        if path is None:
            if now < item.start_ms:
                self._download_wake.set()
                return (item.start_ms - now) / 1000.0
            self._played[(item.id, item.start_ms)] = item.end_ms
            self.emit(
                events.PLAYBACK_FAILED,
                item_id=item.id,
                scope=scope,
                planned_start_ms=item.start_ms,
                sha256=item.media.sha256,
                code="media.not_cached",
                reason=f"media {item.media.path} not cached at start time",
            )
            return 0.0
        self.cache.touch(item.media.sha256)
        self.play(scope, item, path)
        return 0.0

    def _emergency_step(self, emergency: _Emergency, now: int) -> float | None:
        """Play a pending emergency now if its media is here; None lets the programme go on meanwhile."""
        path = self.cache.path(emergency.item.media.sha256)
        if path is None and now < emergency.command.expires:
            self._download_wake.set()
            return None
        with self._lock:
            if self._emergency is emergency:
                self._emergency = None
            pending_tone = self._tone if path is not None else None
            if pending_tone is not None:
                self._tone = None
        if pending_tone is not None:
            self.emit(events.TEST_TONE_FINISHED, scope=pending_tone.scope, nonce=pending_tone.command.nonce,
                      played_ms=0, end_reason="preempted")
        base = {"item_id": emergency.item.id, "scope": emergency.scope, "planned_start_ms": emergency.command.ts}
        if path is None:
            self.emit(
                events.PLAYBACK_FAILED,
                **base,
                sha256=emergency.item.media.sha256,
                code="media.not_cached",
                reason="emergency media not cached before the command expired",
            )
            return 0.0
        # A short lead, as when joining an item, leaves time to start the decoder: nothing is cut.
        item = replace(emergency.item, start_ms=_now_ms() + JOIN_LEAD_MS)
        if self.hardware is not None and self.hardware.amplifier(True):  # no warm-up wait for an emergency
            self.emit(events.AMPLIFIER_CHANGED, on=True, item_id=item.id)
        self.play(emergency.scope, item, path, volume=emergency.volume)
        return 0.0

    def _amp_waits(self) -> bool:
        """Whether the relay is wired and off, so the player must wake a warm-up early."""
        return self.hardware is not None and self.config.amp_pin is not None and not self.hardware.amp_on

    def _drive_amplifier(self, item: Item | None, now: int) -> float:
        """Relay on a warm-up before the next item, off a hold time after the last; returns when to look again."""
        if self.hardware is None or self.config.amp_pin is None:
            return IDLE_WAIT_S
        warmup_ms = self.config.amp_warmup_s * 1000
        if item is not None and item.start_ms - self.config.preroll_ms - warmup_ms <= now:
            if self.hardware.amplifier(True):
                self.emit(events.AMPLIFIER_CHANGED, on=True, item_id=item.id)
            return IDLE_WAIT_S
        if self.hardware.amp_on:
            off_at = self._last_play_end_ms + self.config.amp_hold_s * 1000
            if now >= off_at:
                if self.hardware.amplifier(False):
                    self.emit(events.AMPLIFIER_CHANGED, on=False)
                return IDLE_WAIT_S
            return max(0.05, (off_at - now) / 1000.0)
        return IDLE_WAIT_S

    def _forget_old_plays(self, now: int) -> None:
        for key in [k for k, end in self._played.items() if end < now - PLAYED_MEMORY_MS]:
            del self._played[key]

    def _sleep_until(self, target_ms: float) -> bool:
        """Wait precisely until ``target_ms``; False if stopping.

        Interruptible waits first, then one plain ``sleep`` for the last ``SPIN_S``
        (nanosleep is precise to well under a millisecond; busy-waiting was not,
        once twenty receivers on two cores spun against each other).
        """
        while True:
            remaining = (target_ms - _now_ms_f()) / 1000.0
            if remaining <= 0:
                return True
            if self._stop.is_set():
                return False
            if remaining > SPIN_S:
                self._stop.wait(remaining - SPIN_S)
                continue
            time.sleep(remaining)
            return True

    @staticmethod
    def _correct_drift(output: Output, chunk: bytes) -> bytes:
        """Keep the device on the system clock: insert or drop frames when its position drifts.

        The device's position (frames it consumed, by its own clock) less the
        frames inserted and plus those dropped is where the content stands; the
        system clock says where it should stand. Past ``DRIFT_TOLERANCE_MS`` the
        difference is corrected, at most a tenth of a chunk at a time (repeating
        or skipping single frames is inaudible at that rate).
        """
        position = output.device_frames()
        if position is None or output.first_sample_ms is None:
            return chunk
        ideal = (_now_ms_f() - output.first_sample_ms) * SAMPLE_RATE / 1000.0
        error = position - (output.inserted_frames - output.dropped_frames) - ideal
        if abs(error) <= DRIFT_TOLERANCE_MS * SAMPLE_RATE / 1000.0:
            return chunk
        frame = 2 * CHANNELS
        n = min(int(abs(error)), len(chunk) // frame // 10)
        if n <= 0:
            return chunk
        if error > 0:  # the device runs fast: the content is ahead, hold it back
            output.inserted_frames += n
            return chunk + chunk[-frame:] * n
        output.dropped_frames += n  # the device runs slow (or underran): catch up
        return chunk[: len(chunk) - n * frame]

    def _interruption(self, item: Item) -> str | None:
        """Why the item playing must end now: a ``stop`` command, an emergency ready to play, or a
        test tone waiting (which pre-empts anything but an emergency)."""
        if self._stop_current.is_set():
            self._stop_current.clear()
            return "stopped_by_command"
        emergency = self._emergency
        if (
            emergency is not None
            and emergency.item.id != item.id
            and self.cache.path(emergency.item.media.sha256) is not None
        ):
            return "preempted"
        if self._tone is not None and item.priority != "emergency":
            return "preempted"
        return None

    def _start_decoder(self, path: Path, offset_ms: int) -> tuple[Decoder, bytes]:
        """Start ffmpeg at ``offset_ms`` and read the prebuffer (may be empty on a bad file)."""
        decoder = Decoder(path, offset_ms, SAMPLE_RATE, CHANNELS)
        try:
            return decoder, decoder.read(_frames(PREBUFFER_MS))
        except BaseException:
            decoder.close()
            raise

    def _prepare_following(self) -> None:
        """During the end of an item, start the decoder of the next one so it begins on time."""
        if self._prepared is not None:
            return
        nxt = self.next_item()
        if nxt is None:
            return
        _scope, item = nxt
        if item.start_ms - self.config.preroll_ms > _now_ms():
            return
        if item.media is None or item.kind == "relay":  # silence, or a stream: nothing to decode ahead
            return
        path = self.cache.path(item.media.sha256)
        if path is None:
            return
        try:
            decoder, buffer = self._start_decoder(path, 0)
        except Exception as exc:  # play() will try again and report it
            logger.debug("rx %s: cannot prepare %s: %s", self.rx, item.id, exc)
            return
        self._prepared = _Prepared((item.id, item.start_ms), decoder, buffer)

    def _discard_prepared(self) -> None:
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.decoder.close()

    def _open_output(self, item: Item, volume: int) -> Output:
        """Open the sink for ``item`` at ``volume`` (raising or clearing ``no_audio_device``)."""
        try:
            output = self.sink.open(item.id, item.start_ms, SAMPLE_RATE, CHANNELS)
        except SinkError as exc:
            self._set_fault("no_audio_device", True, reason=str(exc))
            raise
        self._set_fault("no_audio_device", False)
        output.set_volume(volume)
        return output

    def _go_live(self, item: Item, volume: int, target: int) -> Output | None:
        """Open the output (pre-roll), wait for ``target`` and become the item playing.

        None when the agent stops during the wait (the output is closed then).
        """
        output = self._open_output(item, volume)
        if not self._sleep_until(target):
            self._close_output(output, item)
            return None
        self._stop_current.clear()
        self._output = output
        self._playing = item
        if self._stop.is_set():
            output.interrupt()
        return output

    def _must_end(self, item: Item) -> str | None:
        """``stopped`` when the agent stops, else why the item is interrupted (:meth:`_interruption`)."""
        if self._stop.is_set():
            return "stopped"
        return self._interruption(item)

    def _end_live(self) -> None:
        """Nothing plays any more (the output is closed by the caller)."""
        self._playing = None
        self._output = None
        self._last_play_end_ms = _now_ms()

    def _close_output(self, output: Output | None, item: Item) -> None:
        if output is None:
            return
        try:
            output.close()
        except Exception:
            logger.exception("rx %s: closing the output of %s failed", self.rx, item.id)

    def _start_point(self, item: Item) -> tuple[int, int]:
        """``(target_ms, offset_ms)``: play from the start if it is (nearly) now, else join under way."""
        now = _now_ms()
        if now - item.start_ms <= LATE_START_TOLERANCE_MS:
            return item.start_ms, 0
        target = now + JOIN_LEAD_MS
        return target, target - item.start_ms

    @staticmethod
    def _crash(decoder: Decoder) -> str | None:
        """Why a decoder that stopped giving audio died, or None when it ended cleanly (status 0)."""
        decoder.close()  # waits for it to exit: its status tells a clean end from a crash
        status = decoder.returncode
        if status == 0:
            return None
        how = f"killed by signal {-status}" if status is not None and status < 0 else f"exited with status {status}"
        detail = decoder.errors()
        return f"ffmpeg {how}" + (f": {detail}" if detail else "")

    def play(self, scope: str, item: Item, path: Path, volume: int | None = None) -> None:
        """Play one item at its start (or join it under way), reporting what happened.

        A start missed by at most ``LATE_START_TOLERANCE_MS`` (e.g. right after
        the previous item) plays from the beginning; later than that, the item
        is joined at the elapsed offset, as after a restart mid-item.

        When ffmpeg dies in the middle (killed, or a non-zero exit before the
        media's end), the ``player_crashed`` fault is raised and a new decoder
        starts where the content stood (at most ``MAX_DECODER_RESTARTS`` times
        an item). The fault is cleared once an item plays to its end without a
        crash.
        """
        key = (item.id, item.start_ms)
        self._played[key] = item.end_ms
        target, offset_ms = self._start_point(item)
        base = {"item_id": item.id, "scope": scope, "planned_start_ms": item.start_ms}
        prepared, self._prepared = self._prepared, None
        if prepared is not None and (prepared.key != key or offset_ms != 0):
            prepared.decoder.close()
            prepared = None
        if target >= item.end_ms:
            return
        assert item.media is not None
        try:
            if prepared is not None:
                decoder, buffer = prepared.decoder, prepared.buffer
            else:
                decoder, buffer = self._start_decoder(path, offset_ms)
        except DecoderError as exc:
            self.emit(events.PLAYBACK_FAILED, **base, sha256=item.media.sha256, code="decoder.missing", reason=str(exc))
            return
        if not buffer:
            decoder.close()
            detail = decoder.errors() or "no audio"
            self.emit(
                events.PLAYBACK_FAILED,
                **base,
                sha256=item.media.sha256,
                code="decoder.no_audio",
                reason=f"ffmpeg produced no audio: {detail}",
            )
            return
        chunk_bytes = _frames(CHUNK_MS)
        max_bytes = _frames(item.end_ms - max(target, _now_ms()))
        output: Output | None = None
        started = False
        fed = 0
        restarts = 0
        end_reason = "complete"
        error = ""
        try:
            # Pre-roll: the output is open and the first second decoded before t0.
            output = self._go_live(item, self.volume if volume is None else volume, target)
            if output is None:
                return
            pos = 0
            while fed < max_bytes:
                must_end = self._must_end(item)
                if must_end is not None:
                    end_reason = must_end
                    if must_end == "preempted":
                        # Played again after the emergency, joined where the schedule then stands.
                        self._played.pop(key, None)
                    break
                if pos >= len(buffer):
                    buffer = b"" if decoder.eof else decoder.read(chunk_bytes)
                    pos = 0
                    if not buffer:
                        position_ms = offset_ms + fed * 1000 // (SAMPLE_RATE * CHANNELS * 2)
                        crash = self._crash(decoder)
                        if crash is None or position_ms >= item.media.duration_ms - CRASH_END_MARGIN_MS:
                            end_reason = "media_end"
                            break
                        restarts += 1
                        logger.error("rx %s: decoder of %s died at %d ms (%s); restart %d", self.rx, item.id,
                                     position_ms, crash, restarts)
                        self._set_fault("player_crashed", True, item_id=item.id, reason=crash, offset_ms=position_ms)
                        if restarts > MAX_DECODER_RESTARTS:
                            end_reason = "decoder_error"
                            error = crash
                            break
                        # The content goes on where it stopped; the output's short wait for the new decoder
                        # is made up by the drift correction, as after any late write.
                        decoder, buffer = self._start_decoder(path, position_ms)
                        continue
                chunk = buffer[pos : pos + min(chunk_bytes, max_bytes - fed)]
                pos += len(chunk)
                fed += len(chunk)
                output.write(self._correct_drift(output, chunk))
                if not started:
                    started = True
                    actual = output.first_sample_ms or _now_ms_f()
                    self.emit(
                        events.PLAYBACK_STARTED,
                        **base,
                        actual_start_ms=int(round(actual)),
                        offset_ms=offset_ms,
                        sha256=item.media.sha256,
                        priority=item.priority,
                    )
                if item.end_ms - _now_ms() <= self.config.preroll_ms:
                    self._prepare_following()
        except Exception as exc:
            logger.exception("rx %s: playing %s failed", self.rx, item.id)
            end_reason = "error"
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._end_live()
            if not decoder.eof:
                decoder.kill()  # reaped below, once it had time to die: keeps the next item on time
            self._close_output(output, item)
            decoder.close()
        if end_reason == "media_end" and decoder.returncode not in (0, None) and decoder.errors():
            end_reason = "decoder_error"
            error = decoder.errors()
        if not started:
            if end_reason in ("error", "decoder_error"):
                self.emit(events.PLAYBACK_FAILED, **base, sha256=item.media.sha256, code="play.error", reason=error)
            return
        assert output is not None
        fields: dict[str, Any] = {
            **base,
            "played_ms": int(round(fed * 1000 / (SAMPLE_RATE * CHANNELS * 2))),
            "planned_duration_ms": item.duration_ms,
            "offset_ms": offset_ms,
            "end_reason": end_reason,
        }
        if restarts:
            fields["decoder_restarts"] = restarts
        if error:
            fields["error"] = error
        self.emit(events.PLAYBACK_FINISHED, **fields)
        if end_reason in ("complete", "media_end") and not restarts:
            self._set_fault("player_crashed", False, item_id=item.id)

    def play_relay(self, scope: str, item: Item, volume: int | None = None) -> None:
        """Play a relay item: its live stream for the slot, the fallback while the stream stays down.

        The stream (:class:`~receiver.relay.RelayStream`) connects during the
        pre-roll and reconnects by itself. The output runs for the whole slot
        and plays silence while no stream audio is buffered. Once the stream has
        been down for ``relay_fallback_after_s`` the ``stream_unavailable`` fault
        is raised and, when the item's fallback is in the cache, the fallback
        plays (a ``relay.fallback`` event says why). The stream keeps being
        retried meanwhile: once it has delivered audio for ``RELAY_RETURN_S``
        without a break it takes over again (the live relay is what the slot is
        for; the fallback only stands in) and the fault is cleared when its audio
        plays. A later outage in the same slot resumes the fallback where it
        stopped; a fallback played to its end is not repeated, and the slot then
        stays quiet until the stream returns.

        Events follow ordinary items: ``playback.started`` at the first audible
        sample (``source`` = ``stream`` or ``fallback``) and ``playback.finished``
        whose ``played_ms`` counts stream and fallback audio (``stream_ms``,
        ``fallback_ms`` and ``silence_ms`` give the split).
        """
        key = (item.id, item.start_ms)
        self._played[key] = item.end_ms
        self._discard_prepared()
        target, offset_ms = self._start_point(item)
        if target >= item.end_ms:
            return
        assert item.url is not None
        base = {"item_id": item.id, "scope": scope, "planned_start_ms": item.start_ms}
        grace_ms = self.config.relay_fallback_after_s * 1000.0
        half_grace_s = grace_ms / 2000.0
        stream = RelayStream(
            item.url,
            SAMPLE_RATE,
            CHANNELS,
            stall_s=min(RELAY_STALL_S, max(1.0, half_grace_s)),
            retry_max_s=min(RELAY_RETRY_MAX_S, max(RETRY_MIN_S, half_grace_s)),
            label=f"{self.rx}/{item.id}",
        )
        stream.start()
        per_ms = SAMPLE_RATE * CHANNELS * 2 / 1000.0
        chunk_bytes = _frames(CHUNK_MS)
        jitter_bytes = _frames(RELAY_BUFFER_MS)
        output: Output | None = None
        fallback: Decoder | None = None
        fallback_pos_ms = 0  # where the fallback content stands (resumed there after the stream returns)
        fallback_done = False
        buffering = True
        down_since: float | None = None  # wall-clock ms since when no stream audio played
        outage_reported = False
        stream_bytes = fallback_bytes = fed = 0
        started = False
        end_reason = "complete"
        error = ""
        # Measured before the wait, as for an item: the slot runs from ``target`` to its end, so a wake-up
        # a millisecond late does not shorten it.
        max_bytes = _frames(item.end_ms - max(target, _now_ms()))
        try:
            output = self._go_live(item, self.volume if volume is None else volume, target)
            if output is None:
                return
            down_since = _now_ms_f()
            while fed < max_bytes:
                must_end = self._must_end(item)
                if must_end is not None:
                    end_reason = must_end
                    if must_end == "preempted":
                        self._played.pop(key, None)  # rejoined live after the emergency or test tone
                    break
                n = min(chunk_bytes, max_bytes - fed)
                pcm = b""
                source = ""
                if fallback is not None and stream.up_for() >= RELAY_RETURN_S and stream.available() > 0:
                    logger.info("rx %s: relay %s: the stream is back; leaving the fallback at %d ms", self.rx,
                                item.id, fallback_pos_ms)
                    fallback.kill()
                    fallback.close()
                    fallback = None
                if fallback is not None:
                    stream.keep_latest(jitter_bytes)  # the live edge, ready for when the stream takes over
                    pcm = b"" if fallback.eof else fallback.read(n)
                    fallback_pos_ms += int(len(pcm) / per_ms)
                    if len(pcm) < n:
                        logger.info("rx %s: relay %s: fallback played to its end; waiting for the stream",
                                    self.rx, item.id)
                        fallback.close()
                        fallback = None
                        fallback_done = True
                    if pcm:
                        source = "fallback"
                        fallback_bytes += len(pcm)
                else:
                    if buffering and stream.available() >= min(jitter_bytes, max_bytes - fed):
                        buffering = False
                    if not buffering:
                        pcm = stream.take(n)
                        buffering = len(pcm) < n  # ran dry: silence until the jitter buffer is full again
                    if pcm:
                        source = "stream"
                        stream_bytes += len(pcm)
                        down_since = None
                        outage_reported = False
                        self._set_fault("stream_unavailable", False, item_id=item.id, url=item.url)
                    elif down_since is None:
                        down_since = _now_ms_f()
                    if down_since is not None and not outage_reported and _now_ms_f() - down_since > grace_ms:
                        outage_reported = True
                        fallback = self._relay_fall_back(
                            base, item, _now_ms_f() - down_since, stream.last_error, fallback_pos_ms, fallback_done
                        )
                fed += n
                before_ms = output.played_ms
                output.write(self._correct_drift(output, pcm + bytes(n - len(pcm))))
                if pcm and not started:
                    started = True
                    first = output.first_sample_ms
                    actual = first + before_ms if first is not None else _now_ms_f()
                    fields: dict[str, Any] = {"actual_start_ms": int(round(actual)), "offset_ms": offset_ms,
                                              "priority": item.priority, "kind": "relay", "url": item.url,
                                              "source": source}
                    if source == "fallback" and item.media is not None:
                        fields["sha256"] = item.media.sha256
                    self.emit(events.PLAYBACK_STARTED, **base, **fields)
                if item.end_ms - _now_ms() <= self.config.preroll_ms:
                    self._prepare_following()
        except Exception as exc:
            logger.exception("rx %s: relaying %s failed", self.rx, item.id)
            end_reason = "error"
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._end_live()
            stream.stop()
            if fallback is not None:
                fallback.kill()
                fallback.close()
            self._close_output(output, item)
        if not started:
            if end_reason in ("complete", "error"):
                reason = error or (f"no audio from {item.url} in the whole slot and no fallback played: "
                                   f"{stream.last_error or 'no connection'}")
                code = "relay.unavailable" if end_reason == "complete" else "play.error"
                self.emit(events.PLAYBACK_FAILED, **base, code=code, url=item.url, reason=reason)
            return
        finished: dict[str, Any] = {
            **base,
            "played_ms": int(round((stream_bytes + fallback_bytes) / per_ms)),
            "planned_duration_ms": item.duration_ms,
            "offset_ms": offset_ms,
            "end_reason": end_reason,
            "kind": "relay",
            "url": item.url,
            "stream_ms": int(round(stream_bytes / per_ms)),
            "fallback_ms": int(round(fallback_bytes / per_ms)),
            "silence_ms": int(round((fed - stream_bytes - fallback_bytes) / per_ms)),
            "reconnects": max(0, stream.starts - 1),
        }
        if error:
            finished["error"] = error
        self.emit(events.PLAYBACK_FINISHED, **finished)
        if end_reason == "complete":
            self._set_fault("player_crashed", False, item_id=item.id)

    def _relay_fall_back(
        self, base: dict[str, Any], item: Item, down_ms: float, why: str, position_ms: int, done: bool
    ) -> Decoder | None:
        """The stream of a relay stayed down past the grace: raise the fault, start the fallback if there is one."""
        reason = f"no audio from {item.url} for {down_ms / 1000:.1f} s ({why or 'no connection'})"
        decoder: Decoder | None = None
        if item.media is None:
            missing = "the item has no fallback"
        elif done:
            missing = "the fallback was already played to its end"
        else:
            path = self.cache.path(item.media.sha256)
            missing = "the fallback is not in the cache"
            if path is not None:
                try:
                    decoder = Decoder(path, position_ms, SAMPLE_RATE, CHANNELS)
                except DecoderError as exc:
                    missing = f"the fallback cannot be decoded: {exc}"
        self._set_fault("stream_unavailable", True, item_id=item.id, url=item.url, reason=reason,
                        fallback=decoder is not None)
        if decoder is None:
            logger.warning("rx %s: relay %s: %s; %s, the slot stays quiet", self.rx, item.id, reason, missing)
            return None
        assert item.media is not None
        logger.warning("rx %s: relay %s: %s; playing the fallback from %d ms", self.rx, item.id, reason, position_ms)
        self.emit(events.RELAY_FALLBACK, **base, url=item.url, reason=reason, down_ms=int(down_ms),
                  sha256=item.media.sha256, fallback_offset_ms=position_ms)
        return decoder

    def play_tone(self, pending: _Tone) -> None:
        """Play a ``test_tone`` command: a sine at the programme volume, reported as ``test_tone.*`` events.

        It pre-empts the programme (rejoined afterwards where the schedule
        stands) but never an emergency: one that is ready ends the tone
        (``end_reason`` ``preempted``). ``test_tone.started`` carries the actual
        start; ``test_tone.finished`` how long it played and why it ended.
        """
        with self._lock:
            if self._tone is pending:
                self._tone = None
        command = pending.command
        base = {"scope": pending.scope, "nonce": command.nonce, "frequency_hz": pending.frequency_hz,
                "duration_s": pending.duration_s}
        if _now_ms() >= command.expires:
            self.emit(events.TEST_TONE_FINISHED, **base, played_ms=0, end_reason="expired")
            return
        item = Item(id=f"test-tone-{command.nonce[:12]}", title="test tone", start_ms=_now_ms() + JOIN_LEAD_MS,
                    duration_ms=pending.duration_s * 1000, priority="normal", media=None, kind="tone")
        if self.hardware is not None and self.hardware.amplifier(True):
            self.emit(events.AMPLIFIER_CHANGED, on=True, item_id=item.id)
        total = _frames(item.duration_ms) // (2 * CHANNELS)
        chunk_frames = _frames(CHUNK_MS) // (2 * CHANNELS)
        volume = self.volume
        output: Output | None = None
        done = 0
        end_reason = "complete"
        error = ""
        try:
            output = self._go_live(item, volume, item.start_ms)
            if output is None:
                return
            while done < total:
                must_end = self._must_end(item)
                if must_end is not None:
                    end_reason = must_end
                    break
                n = min(chunk_frames, total - done)
                output.write(tone.sine(pending.frequency_hz, SAMPLE_RATE, done, n, total))
                done += n
                if done == n:
                    self.emit(events.TEST_TONE_STARTED, **base, volume=volume,
                              actual_start_ms=int(round(output.first_sample_ms or _now_ms_f())))
        except Exception as exc:
            logger.exception("rx %s: playing the test tone failed", self.rx)
            end_reason = "error"
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._end_live()
            self._close_output(output, item)
        fields: dict[str, Any] = {**base, "played_ms": done * 1000 // SAMPLE_RATE, "end_reason": end_reason}
        if error:
            fields["error"] = error
        self.emit(events.TEST_TONE_FINISHED, **fields)

    # ----------------------------------------------------------- life cycle

    def _dispatcher_loop(self) -> None:
        while True:
            item = self._inbox.get()
            kind = item[0]
            if kind == "stop":
                return
            try:
                if kind == "connected":
                    self._after_connect()
                elif kind == "message":
                    self.handle_message(item[1], item[2])
            except Exception:
                logger.exception("rx %s: dispatcher error", self.rx)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.config.heartbeat_s):
            try:
                self.heartbeat()
            except Exception:
                logger.exception("rx %s: heartbeat error", self.rx)

    def start(self) -> None:
        """Start the threads and connect to the broker in the background."""
        if self._started:
            return
        if self._stopped:
            raise RuntimeError("a stopped agent cannot be restarted; make a new one")
        self._started = True
        logger.info("rx %s: starting (%s)", self.rx, self.config.redacted())
        for name, target in (
            ("dispatcher", self._dispatcher_loop),
            ("downloader", self._downloader_loop),
            ("player", self._player_loop),
            ("heartbeat", self._heartbeat_loop),
        ):
            thread = threading.Thread(target=target, name=f"rx-{self.rx}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.session.start()
        interval = systemd.watchdog_interval_s()
        if interval is not None:
            threading.Thread(
                target=self._watchdog_loop, args=(interval,), name=f"rx-{self.rx}-watchdog", daemon=True
            ).start()
        systemd.notify(f"READY=1\nSTATUS=receiver {self.rx} running")

    def _watchdog_loop(self, interval: float) -> None:
        """Tell systemd we are alive while every worker thread is; a dead one lets the watchdog restart us."""
        while not self._stop.wait(interval):
            dead = [t.name for t in self._threads if not t.is_alive()]
            if dead:
                logger.error("rx %s: thread(s) %s died; no longer feeding the watchdog", self.rx, ", ".join(dead))
                return
            systemd.notify("WATCHDOG=1")

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the MQTT session is up or ``timeout`` seconds pass."""
        return self.session.wait_connected(timeout)

    def stop(self) -> None:
        """Stop playing, end the threads, say ``offline`` to the broker and close the state."""
        if self._stopped:
            return
        self._stopped = True
        logger.info("rx %s: stopping", self.rx)
        systemd.notify("STOPPING=1")
        self._stop.set()
        self._player_wake.set()
        self._download_wake.set()
        output = self._output
        if output is not None:
            output.interrupt()
        self._inbox.put(("stop",))
        for thread in self._threads:
            thread.join(timeout=15)
            if thread.is_alive():
                logger.warning("rx %s: thread %s did not stop", self.rx, thread.name)
        self.session.stop()
        self.cache.close()
        if self.hardware is not None:
            self.hardware.close()
        self.outbox.close()
        self.nonces.close()
        logger.info("rx %s: stopped", self.rx)

    def run_forever(self) -> None:
        """Start, block until SIGTERM or SIGINT, then stop cleanly."""
        run_until_signal(self.start, self.stop)


def run_until_signal(start: Any, stop: Any) -> None:
    """Call ``start()``, wait for SIGTERM/SIGINT, then call ``stop()`` (handlers restored after)."""
    stop_requested = threading.Event()

    def _handler(signum: int, frame: object) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _handler)
    try:
        start()
        while not stop_requested.wait(1.0):
            pass
    finally:
        try:
            stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
