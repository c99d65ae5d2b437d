"""The receiver's MQTT session: the only module of the receiver that imports paho.

One :class:`MqttSession` per receiver: MQTT 3.1.1, persistent session
(``clean_session=False``), a retained ``offline`` last will on
``rx/<rx>/status`` and a retained ``online`` published on every connect.
The network runs in paho's own thread (``loop_start``); an unreachable broker
is retried with exponential backoff and full jitter (a random delay between
1 s and 1 s x 2^attempt, at most 60 s), so that a thousand receivers coming back
after a broker restart do not all knock at once; each failed attempt is logged
once. TLS (``mqtts://``) verifies the broker against ``ca_file`` (or the system
store). The callbacks handed to the agent run in that thread and must be quick;
every exception they raise is caught and logged here.

Each attempt has two deadlines: the TCP (and TLS) connection within
``CONNECT_TIMEOUT_S`` and the broker's CONNACK within ``CONNACK_TIMEOUT_S`` after
it; a port that accepts TCP but never speaks MQTT is logged as such and retried
with the same backoff. With a login the client id is the username (the district
broker sets ``use_username_as_clientid``, so its persistent session has that name).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from schedules import topics

logger = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
RECONNECT_MIN_S = 1
# The longest wait between reconnect attempts; LOAXA_RX_RECONNECT_MAX_S lowers it (tests, or a
# site that would rather hammer its own broker than wait a minute after an outage).
RECONNECT_MAX_S = max(RECONNECT_MIN_S, float(os.environ.get("LOAXA_RX_RECONNECT_MAX_S", "60")))
# How long one attempt may wait for the TCP/TLS connection, then for the broker's CONNACK.
CONNECT_TIMEOUT_S = float(os.environ.get("LOAXA_RX_CONNECT_TIMEOUT_S", "10"))
CONNACK_TIMEOUT_S = float(os.environ.get("LOAXA_RX_CONNACK_TIMEOUT_S", "15"))


def client_id_for(rx_id: str, username: str | None) -> str:
    """The MQTT client id of a receiver: its login when it has one, else ``loaxa-rx-<rx>``."""
    return username if username else f"loaxa-rx-{rx_id}"


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (1, 2, ...): full jitter, capped."""
    ceiling = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** min(max(attempt, 1) - 1, 16))
    return (rng or random).uniform(RECONNECT_MIN_S, max(RECONNECT_MIN_S, ceiling))

OnConnected = Callable[[], object]
OnMessage = Callable[[str, bytes], object]
OnPublished = Callable[[int], object]


class MqttSession:
    """A resilient connection of one receiver to the broker."""

    def __init__(
        self,
        rx_id: str,
        host: str,
        port: int,
        *,
        tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        keepalive: int = 30,
        connect_timeout: float | None = None,
        connack_timeout: float | None = None,
        on_connected: OnConnected | None = None,
        on_message: OnMessage | None = None,
        on_published: OnPublished | None = None,
    ) -> None:
        self.rx_id = rx_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.connack_timeout = CONNACK_TIMEOUT_S if connack_timeout is None else connack_timeout
        self.last_failure: str | None = None
        """Why the last attempt failed (for heartbeats and people), None once connected."""
        self.socket_opens = 0
        """TCP connections opened so far (each attempt that got past the TCP handshake)."""
        self.broker = f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"
        self.on_connected = on_connected
        self.on_message = on_message
        self.on_published = on_published
        self._status_topic = topics.rx_status(rx_id)
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._connected = threading.Event()
        self._attempts = 0
        self._connack_timer: threading.Timer | None = None
        self.client_id = client_id_for(rx_id, username)
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        self._client.connect_timeout = CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(ca_certs=ca_file)
        self._client.will_set(self._status_topic, OFFLINE, qos=1, retain=True)
        self._next_backoff()
        self._client.on_connect = self._handle_connect
        self._client.on_connect_fail = self._handle_connect_fail
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_publish
        self._client.on_socket_open = self._handle_socket_open

    def _next_backoff(self) -> float:
        """Draw the delay before the next reconnect attempt and hand it to paho."""
        self._attempts += 1
        delay = backoff_delay(self._attempts)
        # paho waits min_delay first after a reset; min == max pins that wait to our jittered draw.
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]
        return delay

    @property
    def connected(self) -> bool:
        """True while a CONNACK-accepted connection is up."""
        return self._connected.is_set() and self._client.is_connected()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected or ``timeout`` seconds pass; returns whether connected."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Connect in the background; never raises for an unreachable broker."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stopping = False
        logger.info("rx %s: connecting to MQTT broker %s", self.rx_id, self.broker)
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()

    def stop(self, timeout: float = 2.0) -> None:
        """Publish ``offline`` (retained) when connected, then disconnect and end the network thread."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping = True
        if self.connected:
            info = self._client.publish(self._status_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                logger.debug("rx %s: offline status not confirmed: %s", self.rx_id, exc)
        self._cancel_connack_timer()
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        logger.info("rx %s: disconnected from MQTT broker %s", self.rx_id, self.broker)

    # The CONNACK deadline: armed when a TCP connection opens, cleared by the CONNACK or a disconnect.

    def _handle_socket_open(self, client: paho.Client, userdata: object, sock: object) -> None:
        try:
            self.socket_opens += 1
            self._cancel_connack_timer()
            timer = threading.Timer(self.connack_timeout, self._connack_overdue, args=(sock,))
            timer.daemon = True
            self._connack_timer = timer
            timer.start()
        except Exception:  # pragma: no cover - a timer that cannot start must not break the connection
            logger.exception("rx %s: cannot arm the CONNACK timeout", self.rx_id)

    def _cancel_connack_timer(self) -> None:
        timer, self._connack_timer = self._connack_timer, None
        if timer is not None:
            timer.cancel()

    def _connack_overdue(self, sock: Any) -> None:
        """The broker took the TCP connection but sent no CONNACK in time: drop it, paho retries."""
        try:
            if self._stopping or self._connected.is_set() or self._client.socket() is not sock:
                return
            delay = self._next_backoff()
            self.last_failure = (
                f"broker at {self.host}:{self.port} accepted TCP but sent no CONNACK within {self.connack_timeout:g} s"
            )
            logger.warning(
                "rx %s: %s; retrying in %.1f s (attempt %d)", self.rx_id, self.last_failure, delay, self._attempts
            )
            try:
                sock.shutdown(socket.SHUT_RDWR)  # paho reads EOF, reports the loss and reconnects after the delay
            except OSError:
                pass
        except Exception:  # pragma: no cover - logging itself failed
            pass

    def subscribe(self, topic: str, qos: int = 1) -> bool:
        """Subscribe now if connected; returns False when not (re-subscribe on connect)."""
        if not self.connected:
            return False
        rc, _mid = self._client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.warning("rx %s: subscribe %s failed: %s", self.rx_id, topic, paho.error_string(rc))
            return False
        logger.debug("rx %s: subscribed %s (QoS %d)", self.rx_id, topic, qos)
        return True

    def unsubscribe(self, topic: str) -> bool:
        """Unsubscribe if connected; returns whether the request was sent."""
        if not self.connected:
            return False
        rc, _mid = self._client.unsubscribe(topic)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.warning("rx %s: unsubscribe %s failed: %s", self.rx_id, topic, paho.error_string(rc))
            return False
        logger.debug("rx %s: unsubscribed %s", self.rx_id, topic)
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int | None:
        """Publish and return the message id, or None when not connected (nothing is queued)."""
        if not self.connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.debug("rx %s: publish on %s not sent: %s", self.rx_id, topic, paho.error_string(info.rc))
            return None
        return info.mid

    # paho callbacks: they run in the network thread and never raise.

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        try:
            self._cancel_connack_timer()
            if getattr(reason_code, "is_failure", False):
                self.last_failure = f"broker at {self.host}:{self.port} refused the connection: {reason_code}"
                logger.warning(
                    "rx %s: MQTT broker %s refused the connection: %s; retrying", self.rx_id, self.broker, reason_code
                )
                return
            self._connected.set()
            self._attempts = 0
            self.last_failure = None
            self._next_backoff()
            logger.info("rx %s: connected to MQTT broker %s", self.rx_id, self.broker)
            client.publish(self._status_topic, ONLINE, qos=1, retain=True)
            if self.on_connected is not None:
                self.on_connected()
        except Exception:
            logger.exception("rx %s: error in on_connect", self.rx_id)

    def _handle_connect_fail(self, client: paho.Client, userdata: object) -> None:
        try:
            delay = self._next_backoff()
            self.last_failure = (
                f"cannot reach broker at {self.host}:{self.port} (no TCP connection within "
                f"{client.connect_timeout:g} s, or refused)"
            )
            logger.warning(
                "rx %s: cannot reach MQTT broker %s; retrying in %.1f s (attempt %d)",
                self.rx_id,
                self.broker,
                delay,
                self._attempts,
            )
        except Exception:  # pragma: no cover - logging itself failed
            pass

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        try:
            self._cancel_connack_timer()
            was_connected = self._connected.is_set()
            self._connected.clear()
            if self._stopping:
                logger.debug("rx %s: disconnected (%s)", self.rx_id, reason_code)
            elif was_connected:
                logger.warning(
                    "rx %s: lost MQTT broker %s (%s); reconnecting with backoff", self.rx_id, self.broker, reason_code
                )
        except Exception:  # pragma: no cover - logging itself failed
            pass

    def _handle_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            if self.on_message is not None:
                self.on_message(message.topic, bytes(message.payload))
        except Exception:
            logger.exception("rx %s: error handling a message", self.rx_id)

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: object,
        properties: object,
    ) -> None:
        try:
            if self.on_published is not None:
                self.on_published(mid)
        except Exception:
            logger.exception("rx %s: error in on_publish", self.rx_id)


# ---------------------------------------------------------------- many clients, one thread


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
                           self.pool.host, self.pool.port, CONNACK_TIMEOUT_S)
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the next read sees EOF: disconnect, then _retry with backoff
            except OSError:
                pass

        self.pool.call_later(CONNACK_TIMEOUT_S, check)

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
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
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
