"""The receiver's MQTT session (what a Pi runs; with receiver.mqtt.pool the only modules importing paho).

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

import logging
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from receiver.mqtt import base
from receiver.mqtt.base import (
    OFFLINE,
    ONLINE,
    OnConnected,
    OnMessage,
    OnPublished,
    backoff_delay,
    client_id_for,
)
from schedules import topics

logger = logging.getLogger(__name__)



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
        self.connack_timeout = base.CONNACK_TIMEOUT_S if connack_timeout is None else connack_timeout
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
        self._client.connect_timeout = base.CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
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
            base.shutdown(sock)  # paho reads EOF, reports the loss and reconnects after the delay
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
