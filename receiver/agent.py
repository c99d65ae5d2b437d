"""The receiver agent: the composition root that wires the receiver's parts and runs their threads.

The parts (docs/design.md, "The receiver's parts"): :mod:`receiver.holdings`
(verified conf and manifests, the timeline), :mod:`receiver.gate` (commands and
the orders they leave), :mod:`receiver.reporter` (outbox, faults, heartbeat),
:mod:`receiver.downloader`, :mod:`receiver.player` over :mod:`receiver.playout`,
and :mod:`receiver.mqtt`.

Threads: paho's network thread only enqueues what arrives and acknowledges outbox
rows on PUBACK; the *dispatcher* handles the queue in order (subscriptions and the
outbox flush after every connect, then each message: :meth:`Agent.handle_message`,
which never raises); the *downloader*, the *player*, the *heartbeat*. systemd gets
READY/WATCHDOG (:mod:`receiver.systemd`), not fed once a worker thread dies.

State under ``state_dir``: ``outbox.db``, ``nonces.db`` (nonces of obeyed
commands, the replay guard), ``media/``, ``conf.json`` and
``manifests/<scope>.json``, so a restart with the broker down still plays.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from receiver import systemd
from receiver.cache import MediaCache
from receiver.config import ReceiverConfig
from receiver.downloader import Downloader
from receiver.files import private_dir
from receiver.gate import CommandGate, Orders, ack_fields
from receiver.hardware import Hardware, HardwareError
from receiver.holdings import Holdings, Verdict
from receiver.mqtt import MqttSession
from receiver.nonces import NonceStore
from receiver.outbox import Outbox
from receiver.player import Player
from receiver.reporter import Reporter
from receiver.sinks import Sink, make_sink
from receiver.verifier import Verifier
from schedules import events, topics
from schedules.conf import ReceiverConf
from schedules.events import now_ms
from schedules.manifest import Item, Manifest

logger = logging.getLogger(__name__)


class Agent:
    """One receiver: connect, verify, fetch, play on time, report."""

    def __init__(self, config: ReceiverConfig, sink: Sink | None = None) -> None:
        self.config = config
        self.rx = config.rx_id
        self.state_dir = Path(config.state_dir)
        private_dir(self.state_dir)
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
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.session = MqttSession(
            self.rx, broker.host, broker.port, tls=broker.tls, username=broker.username, password=broker.password,
            ca_file=config.mqtt_ca_file,
            on_connected=lambda: self._inbox.put(("connected",)),
            on_message=lambda topic, payload: self._inbox.put(("message", topic, payload)),
            on_published=lambda mid: self.reporter.acked(mid),
        )
        self.reporter = Reporter(self.rx, self.outbox, self.session, self.state_dir, config.disk_reserve_mb,
                                 config.ntp_server)
        verifier = Verifier(config.controller_public_key)
        self.holdings = Holdings(self.rx, verifier, self.state_dir)
        self.gate = CommandGate(self.rx, verifier, self.nonces, self.holdings.follows)
        self.orders = Orders()
        self._stop = threading.Event()
        self.hardware: Hardware | None = None
        try:
            self.hardware = Hardware(amp_pin=config.amp_pin, fault_pins=dict(config.fault_pins),
                                     on_fault=self._on_fault_input, mock=config.gpio_mock)
        except HardwareError as exc:
            logger.error("rx %s: no GPIO, running without relay and fault inputs: %s", self.rx, exc)
        self.downloader = Downloader(self.rx, self.cache, self.holdings, self.orders, self.reporter, self._stop,
                                     on_fetched=lambda: self.player.wake.set())
        self.player = Player(self.rx, config, sink, self.cache, self.holdings, self.orders, self.reporter,
                             self.hardware, self._stop, self.downloader.wake)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopped = False

    # ------------------------------------------------------------------ views

    @property
    def conf(self) -> ReceiverConf | None:
        """The configuration in force (None until the first valid one)."""
        return self.holdings.conf

    @property
    def manifests(self) -> dict[str, Manifest]:
        """The manifest held for each scope."""
        return self.holdings.manifests

    @property
    def playing(self) -> str | None:
        """The id of the item playing now, or None."""
        return self.player.playing

    @property
    def volume(self) -> int:
        """The programme volume: the last ``volume`` command, else the conf's, else 80."""
        return self.player.volume

    def scopes(self) -> list[str]:
        """The scopes this receiver follows, widest first; its own ``rx/<id>`` is always last."""
        return self.holdings.scopes()

    def next_item(self, now: int | None = None) -> tuple[str, Item] | None:
        """The next ``(scope, item)`` still to play."""
        return self.player.stage.next_item(now)

    def heartbeat(self) -> dict[str, Any]:
        """Build and publish the heartbeat now; returns its body."""
        return self.reporter.heartbeat(manifests=self.holdings.versions(), playing=self.playing,
                                       volume=self.volume, cache=self.cache)

    def _on_fault_input(self, fault: str, active: bool) -> None:
        """A hardware fault input changed (called from gpiozero's thread)."""
        try:
            self.reporter.set_fault(fault, active, source="gpio")
        except Exception:
            logger.exception("rx %s: cannot report fault input %s", self.rx, fault)

    # -------------------------------------------------------------- messages

    def _after_connect(self) -> None:
        self.session.subscribe(topics.conf(self.rx), 1)
        for scope in self.scopes():
            self._subscribe(scope)
        self.reporter.flush()
        self.heartbeat()

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Act on one message from the broker; logs and drops anything wrong, never raises."""
        try:
            if topic == topics.conf(self.rx):
                self._conf_arrived(self.holdings.offer_conf(payload))
            elif (scope := topics.scope_of_sched_topic(topic)) is not None:
                self._manifest_arrived(self.holdings.offer_manifest(scope, payload))
            elif (scope := topics.scope_of_cmd_topic(topic)) is not None:
                self._command_arrived(scope, payload)
            elif (scope := topics.scope_of_alert_topic(topic)) is not None:
                self._alert_arrived(scope, payload)
            else:
                logger.debug("rx %s: ignoring message on unknown topic %s", self.rx, topic)
        except Exception:
            logger.exception("rx %s: error handling a message on %s", self.rx, topic)

    def _subscribe(self, scope: str) -> None:
        for topic in topics.scope_topics(scope):
            self.session.subscribe(topic, 1)

    def _conf_arrived(self, verdict: Verdict) -> None:
        for scope in verdict.removed:
            for topic in topics.scope_topics(scope):
                self.session.unsubscribe(topic)
        for scope in verdict.added:
            self._subscribe(scope)
        self._manifest_arrived(verdict)

    def _manifest_arrived(self, verdict: Verdict) -> None:
        self.reporter.emit_all(verdict.events)
        if verdict.accepted:
            self.downloader.wake.set()
            self.player.wake.set()

    def _command_arrived(self, scope: str, payload: bytes) -> None:
        verdict = self.gate.check(scope, payload, now_ms())
        self.reporter.emit_all(verdict.events)
        command = verdict.command
        if command is None:
            return
        if command.action == "resync":
            self._inbox.put(("connected",))
            ack: dict[str, Any] | None = {}
        else:
            ack = self.player.obey(scope, command, verdict.body)
        if ack is not None:
            self.reporter.emit(events.COMMAND_ACK, **ack_fields(scope, command), **ack)

    def _alert_arrived(self, scope: str, payload: bytes) -> None:
        """The retained alert state of a scope: join a running alert, or end one whose state was cleared."""
        if not payload:
            if self.holdings.follows(scope):
                self.player.alert_ended(scope)
            return
        verdict = self.gate.check_alert(scope, payload, now_ms())
        self.reporter.emit_all(verdict.events)
        if verdict.command is not None and (ack := self.player.join_alert(scope, verdict.command)) is not None:
            self.reporter.emit(events.COMMAND_ACK, **ack_fields(scope, verdict.command), **ack)

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
        workers: tuple[tuple[str, Callable[[], None]], ...] = (
            ("dispatcher", self._dispatcher_loop),
            ("downloader", self.downloader.run),
            ("player", self.player.run),
            ("heartbeat", self._heartbeat_loop),
        )
        for name, target in workers:
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
        self.player.interrupt()
        self.downloader.wake.set()
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
        systemd.run_until_signal(self.start, self.stop)
