"""The only controller module that imports paho: publish signed messages, receive telemetry."""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from schedules import topics

logger = logging.getLogger(__name__)

TELEMETRY_PREFIX = f"{topics.PREFIX}/rx/"
MAX_TELEMETRY_BYTES = 64 * 1024
"""A receiver's status, heartbeat or event larger than this is refused in the paho thread, never queued."""


class MqttError(Exception):
    """Publishing or connecting failed."""


def parse_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """``mqtt[s]://[user:pass@]host[:port]`` -> (host, port, tls, user, password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname or "127.0.0.1", port, tls, user, password


class ControllerLink:
    """The controller's MQTT session: QoS 1 publishes and telemetry subscriptions.

    With a login the client id is the username, whatever ``client_id`` says: the district broker
    sets ``use_username_as_clientid`` (deploy/mosquitto/loaxa.conf) and keys the persistent session
    by the login, so asking for another id would only make the session's name differ from ours.
    """

    def __init__(self, url: str, client_id: str, subscriptions: list[tuple[str, int]],
                 on_message: Callable[[str, bytes], None], on_connect: Callable[[], None] | None = None,
                 *, max_telemetry_bytes: int = MAX_TELEMETRY_BYTES):
        host, port, tls, user, password = parse_url(url)
        self._host, self._port = host, port
        if user and client_id != user:
            logger.info("controller connects as client id %r (its broker login), not %r", user, client_id)
            client_id = user
        self.client_id = client_id
        self.max_telemetry_bytes = max_telemetry_bytes
        # Telemetry refused before it was queued, by receiver id (read by status views and tests).
        self.refused: collections.Counter[str] = collections.Counter()
        self.disconnects = 0
        self._subscriptions = subscriptions
        self._on_message_cb = on_message
        self._on_connect_cb = on_connect
        self.connected = threading.Event()
        # Since when the controller has not been connected (None while it is): what receivers do
        # meanwhile cannot be known here, so status views say "unknown since" this time.
        self.down_since_ms: int | None = time.time_ns() // 1_000_000
        self.connected_at_ms: int | None = None
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=paho.MQTTv311)
        if user:
            self._client.username_pw_set(user, password)
        if tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(1, 30)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                wait: float | None = None) -> None:
        """Queue a publish; with ``wait``, block until the broker acknowledged it."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise MqttError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        if wait:
            info.wait_for_publish(wait)

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            logger.warning("broker %s:%s refused the controller: %s", self._host, self._port, reason_code)
            return
        logger.info("controller connected to broker %s:%s", self._host, self._port)
        self.connected_at_ms = time.time_ns() // 1_000_000  # before subscribing: retained copies come after
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        self.connected.set()
        self.down_since_ms = None
        if self._on_connect_cb:
            threading.Thread(target=self._safe_on_connect, name="mqtt-on-connect", daemon=True).start()

    def _safe_on_connect(self) -> None:
        try:
            self._on_connect_cb()  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - never let a callback kill the link
            logger.exception("on-connect work failed")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected.clear()
        self.disconnects += 1
        if self.down_since_ms is None:
            self.down_since_ms = time.time_ns() // 1_000_000
        logger.warning("controller lost the broker %s:%s: %s", self._host, self._port, reason_code)

    def _on_message(self, _client, _userdata, msg) -> None:
        try:
            if msg.topic.startswith(TELEMETRY_PREFIX) and len(msg.payload) > self.max_telemetry_bytes:
                rx_id = msg.topic[len(TELEMETRY_PREFIX):].split("/", 1)[0]
                self.refused[rx_id] += 1
                logger.warning("rx=%s sent %d bytes on %s (the limit is %d); refused before queueing "
                               "(%d refused from it so far)", rx_id, len(msg.payload), msg.topic,
                               self.max_telemetry_bytes, self.refused[rx_id])
                return
            self._on_message_cb(msg.topic, bytes(msg.payload))
        except Exception:  # noqa: BLE001 - the network thread must survive any message
            logger.exception("telemetry message on %s could not be handled", msg.topic)
