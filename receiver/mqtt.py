"""The receiver's MQTT session: the only module of the receiver that imports paho.

One :class:`MqttSession` per receiver: MQTT 3.1.1, persistent session
(``clean_session=False``), a retained ``offline`` last will on
``rx/<rx>/status`` and a retained ``online`` published on every connect.
The network runs in paho's own thread (``loop_start``); an unreachable broker
is retried with exponential backoff (1 s to 60 s), each failed attempt logged
once. The callbacks handed to the agent run in that thread and must be quick;
every exception they raise is caught and logged here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from schedules import topics

logger = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 60

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
        on_connected: OnConnected | None = None,
        on_message: OnMessage | None = None,
        on_published: OnPublished | None = None,
    ) -> None:
        self.rx_id = rx_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.broker = f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"
        self.on_connected = on_connected
        self.on_message = on_message
        self.on_published = on_published
        self._status_topic = topics.rx_status(rx_id)
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._connected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"loaxa-rx-{rx_id}",
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(ca_certs=ca_file)
        self._client.will_set(self._status_topic, OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._handle_connect
        self._client.on_connect_fail = self._handle_connect_fail
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_publish

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
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        logger.info("rx %s: disconnected from MQTT broker %s", self.rx_id, self.broker)

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
            if getattr(reason_code, "is_failure", False):
                logger.warning(
                    "rx %s: MQTT broker %s refused the connection: %s; retrying", self.rx_id, self.broker, reason_code
                )
                return
            self._connected.set()
            logger.info("rx %s: connected to MQTT broker %s", self.rx_id, self.broker)
            client.publish(self._status_topic, ONLINE, qos=1, retain=True)
            if self.on_connected is not None:
                self.on_connected()
        except Exception:
            logger.exception("rx %s: error in on_connect", self.rx_id)

    def _handle_connect_fail(self, client: paho.Client, userdata: object) -> None:
        try:
            logger.warning(
                "rx %s: cannot reach MQTT broker %s; retrying with backoff (%d-%d s)",
                self.rx_id,
                self.broker,
                RECONNECT_MIN_S,
                RECONNECT_MAX_S,
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
