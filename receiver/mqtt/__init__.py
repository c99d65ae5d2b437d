"""The receiver's MQTT: :mod:`receiver.mqtt.session` (one receiver, paho's own thread; what a Pi runs)
and :mod:`receiver.mqtt.pool` (the simulator's many clients on one selector; never imported here).
"""

from receiver.mqtt.base import (
    CONNACK_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    OFFLINE,
    ONLINE,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    backoff_delay,
    client_id_for,
)
from receiver.mqtt.session import MqttSession

__all__ = ["CONNACK_TIMEOUT_S", "CONNECT_TIMEOUT_S", "OFFLINE", "ONLINE", "RECONNECT_MAX_S", "RECONNECT_MIN_S",
           "MqttSession", "backoff_delay", "client_id_for"]
