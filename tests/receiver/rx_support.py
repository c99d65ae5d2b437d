"""Helpers for the receiver tests, shared by conftest.py and the test modules.

A uniquely named module (not ``conftest``) so that test modules can import it
without clashing with other packages' conftest files.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.broker import mosquitto_binary  # noqa: F401  (re-exported for the receiver tests)
from schedules import signing
from schedules.conf import ReceiverConf
from schedules.manifest import Item, Manifest, MediaRef

TOKEN = "test-token-123"


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def now_ms() -> int:
    """UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


def content_bytes(sidecar: dict[str, Any]) -> int:
    """Bytes of the item's own audio in a file-sink recording: what the sink got, less the frames the
    player inserted and plus those it dropped to keep the output on the system clock (2 bytes a frame)."""
    return int(sidecar["bytes"]) - 2 * (int(sidecar.get("inserted_frames", 0)) - int(sidecar.get("dropped_frames", 0)))


def unique(prefix: str = "t") -> str:
    """A fresh slug, so tests sharing a broker never see each other's retained messages."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------ signing


def signed_conf(key: Any, rx: str, version: int, scopes: list[str], volume: int = 80) -> bytes:
    """Wire bytes of a signed receiver conf."""
    return signing.sign(key, ReceiverConf(rx=rx, version=version, scopes=scopes, volume=volume).to_body())


def make_item(item_id: str, start_ms: int, duration_ms: int, media: MediaRef, priority: str = "normal") -> Item:
    """One scheduled item."""
    return Item(id=item_id, title=item_id, start_ms=start_ms, duration_ms=duration_ms, priority=priority, media=media)


def signed_manifest(key: Any, scope: str, version: int, items: list[Item]) -> bytes:
    """Wire bytes of a signed manifest."""
    now = now_ms()
    manifest = Manifest(
        scope=scope,
        version=version,
        generated_ms=now,
        window_start_ms=now,
        window_end_ms=now + 48 * 3600 * 1000,
        items=items,
    )
    return signing.sign(key, manifest.to_body())


# ------------------------------------------------------------------ audio


@dataclass(frozen=True)
class Media:
    """A generated audio file and its reference as a manifest names it."""

    path: Path
    data: bytes
    ref: MediaRef


def sine_mp3_file(directory: Path, seconds: float, freq: int) -> Media:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    out = directory / f"sine-{freq}-{seconds}.mp3"
    subprocess.run(
        [
            ffmpeg,
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={freq}:duration={seconds}:sample_rate=44100",
            "-ac",
            "1",
            "-b:a",
            "48k",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    data = out.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    ref = MediaRef(sha256=sha, path=f"/media/{sha}.mp3", bytes=len(data), duration_ms=int(seconds * 1000))
    return Media(out, data, ref)


# ------------------------------------------------------------------ media server


@dataclass
class MediaServer:
    """A tiny HTTP server that checks the bearer token and honours ``Range``."""

    url: str = ""
    token: str = TOKEN
    files: dict[str, bytes] = field(default_factory=dict)
    honour_range: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    throttle_s: float = 0.0
    """Pause after each 4 kB of a body (a slow 4G link), 0 for full speed."""

    def add(self, media: Media) -> None:
        """Serve ``media`` at the path its reference names."""
        self.files[media.ref.path] = media.data


def media_handler(server_state: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            auth = self.headers.get("Authorization")
            server_state.requests.append({"path": self.path, "range": self.headers.get("Range"), "auth": auth})
            if auth is None:
                self._reply(401, b"no token")
                return
            if auth != f"Bearer {server_state.token}":
                self._reply(403, b"bad token")
                return
            data = server_state.files.get(self.path)
            if data is None:
                self._reply(404, b"not found")
                return
            match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
            if match and server_state.honour_range:
                start = int(match.group(1))
                if start >= len(data):
                    self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
                self._reply(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                return
            self._reply(200, data)

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if not server_state.throttle_s:
                self.wfile.write(body)
                return
            for i in range(0, len(body), 4096):
                try:
                    self.wfile.write(body[i : i + 4096])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(server_state.throttle_s)

    return Handler


# ------------------------------------------------------------------ broker


@dataclass(frozen=True)
class Broker:
    """Where the test broker listens."""

    url: str
    host: str
    port: int


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Collector:
    """A plain paho client that records what arrives on some topics."""

    def __init__(self, broker: Broker, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("collector-"))
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        if not self._subscribed.wait(10):
            self.close()
            pytest.fail("collector could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on one topic, in order."""
        with self._cond:
            return [p for t, p, _ in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish QoS 1 and wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


# ------------------------------------------------------------------ configs


def toml_text(values: dict[str, Any]) -> str:
    """A flat TOML document of strings and numbers."""
    lines = []
    for key, value in values.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"
