"""The simulator's client pool: many paho clients driven by one thread (DESIGN.md, "Many receivers in one process").

Not imported by the agent: a Pi never loads it. Fault injection (cuts, pauses) lives here too.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from receiver.mqtt import base
from receiver.mqtt.base import (
    OFFLINE,
    ONLINE,
    backoff_delay,
)

logger = logging.getLogger(__name__)


class PooledClient:
    """One MQTT client of a :class:`ClientPool`; every method must be called from the pool's thread."""

    def __init__(
        self,
        pool: ClientPool,
        client_id: str,
        *,
        will_topic: str | None,
        username: str | None,
        password: str | None,
        on_connected: Callable[[PooledClient], object],
        on_message: Callable[[PooledClient, str, bytes], object],
        on_published: Callable[[PooledClient, int], object],
    ) -> None:
        self.pool = pool
        self.client_id = client_id
        self.connected = False
        self.offline_until = 0.0
        self.attempts = 0
        self._on_connected = on_connected
        self._on_message_cb = on_message
        self._on_published = on_published
        self._will_topic = will_topic
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if username is not None:
            client.username_pw_set(username, password)
        if pool.tls:
            client.tls_set(ca_certs=pool.ca_file)
        if will_topic is not None:
            client.will_set(will_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_socket_open = pool._socket_open
        client.on_socket_close = pool._socket_close
        client.on_socket_register_write = pool._register_write
        client.on_socket_unregister_write = pool._unregister_write
        client.user_data_set(self)
        self.client = client

    def connect(self) -> None:
        """Open the connection now, or schedule a retry with jittered backoff."""
        if time.monotonic() < self.offline_until or self.pool.stopping:
            return
        try:
            self.client.connect(self.pool.host, self.pool.port, keepalive=self.pool.keepalive)
        except OSError as exc:
            self._retry(f"{type(exc).__name__}: {exc}")
            return
        self._arm_connack_check()

    def _arm_connack_check(self) -> None:
        """Drop this attempt's socket if the broker sends no CONNACK within ``CONNACK_TIMEOUT_S``."""
        sock = self.client.socket()

        def check() -> None:
            if self.connected or self.pool.stopping or sock is None or self.client.socket() is not sock:
                return
            logger.warning("%s: broker at %s:%s accepted TCP but sent no CONNACK within %g s", self.client_id,
                           self.pool.host, self.pool.port, base.CONNACK_TIMEOUT_S)
            base.shutdown(sock)  # the next read sees EOF: disconnect, then _retry with backoff

        self.pool.call_later(base.CONNACK_TIMEOUT_S, check)

    def _retry(self, why: str) -> None:
        self.attempts += 1
        delay = backoff_delay(self.attempts)
        logger.debug("%s: cannot connect (%s); retrying in %.1f s", self.client_id, why, delay)
        self.pool.call_later(delay, self.reconnect)

    def reconnect(self) -> None:
        """Reconnect unless connected, held offline, or the pool is stopping."""
        if self.connected or self.pool.stopping:
            return
        if time.monotonic() < self.offline_until:
            self.pool.call_later(self.offline_until - time.monotonic(), self.reconnect)
            return
        try:
            self.client.reconnect()
        except OSError as exc:
            self._retry(f"{type(exc).__name__}: {exc}")
            return
        self._arm_connack_check()

    def cut(self, seconds: float) -> None:
        """Simulate a network cut: drop the socket without DISCONNECT (the will fires), stay away ``seconds``."""
        self.offline_until = time.monotonic() + seconds
        sock = self.client.socket()
        base.shutdown(sock)
        self.pool.call_later(seconds, self.reconnect)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int | None:
        """Queue a publish (QoS 1 ones wait in paho's session while offline); returns the message id."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return None
        return info.mid

    def subscribe(self, topics_: list[str], qos: int = 1) -> None:
        """Subscribe to several topics in one SUBSCRIBE packet (when connected)."""
        if self.connected and topics_:
            self.client.subscribe([(t, qos) for t in topics_])

    def unsubscribe(self, topics_: list[str]) -> None:
        """Unsubscribe from several topics in one UNSUBSCRIBE packet (when connected)."""
        if self.connected and topics_:
            self.client.unsubscribe(topics_)

    def _handle_connect(self, client: paho.Client, pc: object, flags: object, rc: object, props: object) -> None:
        try:
            if getattr(rc, "is_failure", False):
                return
            self.connected = True
            self.attempts = 0
            if self._will_topic is not None:
                client.publish(self._will_topic, ONLINE, qos=1, retain=True)
            self._on_connected(self)
        except Exception:
            logger.exception("%s: error in on_connect", self.client_id)

    def _handle_disconnect(self, client: paho.Client, pc: object, flags: object, rc: object, props: object) -> None:
        self.connected = False
        if not self.pool.stopping:
            self._retry(f"disconnected: {rc}")

    def _handle_message(self, client: paho.Client, pc: object, message: paho.MQTTMessage) -> None:
        try:
            self._on_message_cb(self, message.topic, bytes(message.payload))
        except Exception:
            logger.exception("%s: error handling a message on %s", self.client_id, message.topic)

    def _handle_publish(self, client: paho.Client, pc: object, mid: int, rc: object, props: object) -> None:
        try:
            self._on_published(self, mid)
        except Exception:
            logger.exception("%s: error in on_publish", self.client_id)


class ClientPool:
    """Many paho clients driven by one thread through a selector (DESIGN.md, "Many receivers in one process").

    The thread waits on every client socket (reads always, writes while paho
    has bytes queued, via paho's socket register callbacks), runs timers
    (:meth:`call_later`) and calls ``loop_misc`` for keep-alives once a second.
    Other threads hand it work with :meth:`call_soon`.
    """

    def __init__(self, host: str, port: int, *, tls: bool = False, ca_file: str | None = None, keepalive: int = 60):
        self.host = host
        self.port = port
        self.tls = tls
        self.ca_file = ca_file
        self.keepalive = keepalive
        self.clients: list[PooledClient] = []
        self.stopping = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: collections.deque[Callable[[], object]] = collections.deque()
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, client_id: str, **kwargs: Any) -> PooledClient:
        """Make a client (not yet connected; call its ``connect`` in the pool's thread)."""
        pc = PooledClient(self, client_id, **kwargs)
        self.clients.append(pc)
        return pc

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the pool's thread as soon as possible (thread-safe)."""
        self._calls.append(fn)
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the pool's thread after ``delay_s`` (call from the pool's thread)."""
        heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay_s), next(self._seq), fn))

    def call_at_wall(self, epoch_ms: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` at a wall-clock time (epoch ms), measured now against the monotonic clock."""
        self.call_later((epoch_ms - time.time_ns() / 1e6) / 1000.0, fn)

    # selector registration, called by paho from the pool's thread
    def _socket_open(self, client: paho.Client, pc: PooledClient, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, pc)

    def _socket_close(self, client: paho.Client, pc: PooledClient, sock: Any) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _register_write(self, client: paho.Client, pc: PooledClient, sock: Any) -> None:
        try:
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, pc)
        except (KeyError, ValueError):
            pass

    def _unregister_write(self, client: paho.Client, pc: PooledClient, sock: Any) -> None:
        try:
            self._selector.modify(sock, selectors.EVENT_READ, pc)
        except (KeyError, ValueError):
            pass

    def start(self) -> None:
        """Run the loop in its own thread."""
        self._thread = threading.Thread(target=self.run, name="rx-pool", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect every client and end the loop."""

        def _shutdown() -> None:
            self.stopping = True
            for pc in self.clients:
                if pc.connected and pc._will_topic is not None:
                    pc.client.publish(pc._will_topic, OFFLINE, qos=1, retain=True)
                pc.client.disconnect()
                sock = pc.client.socket()
                if sock is not None:
                    pc.client.loop_write()

        self.call_soon(_shutdown)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def run(self) -> None:
        """The loop: sockets, calls, timers, keep-alives; returns once :meth:`stop` was called."""
        next_misc = time.monotonic() + 1.0
        while not self.stopping:
            now = time.monotonic()
            timeout = next_misc - now
            if self._timers:
                timeout = min(timeout, self._timers[0][0] - now)
            if self._calls:
                timeout = 0
            for key, mask in self._selector.select(max(0.0, timeout)):
                pc = key.data
                if pc is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    continue
                try:
                    if mask & selectors.EVENT_READ:
                        pc.client.loop_read()
                    if mask & selectors.EVENT_WRITE:
                        pc.client.loop_write()
                except Exception:
                    logger.exception("%s: network error", pc.client_id)
            while self._calls:
                self._run(self._calls.popleft())
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._run(heapq.heappop(self._timers)[2])
            if now >= next_misc:
                next_misc = now + 1.0
                for pc in self.clients:
                    if pc.client.socket() is not None:
                        pc.client.loop_misc()

    @staticmethod
    def _run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            logger.exception("simulator loop: a scheduled call failed")
