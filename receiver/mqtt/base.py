"""What the receiver's MQTT session and the simulator's pool share: status words, backoff, client ids."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable

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


def shutdown(sock: object) -> None:
    """Shut a paho socket down both ways without DISCONNECT (paho then reads EOF and reports the loss)."""
    if isinstance(sock, socket.socket):  # TCP, or TLS (an SSLSocket is one)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
