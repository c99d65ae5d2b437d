"""Helpers for the receiver tests, shared by conftest.py and the test modules.

A uniquely named module (not ``conftest``) so that test modules can import it
without clashing with other packages' conftest files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
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
SECOND = 44100 * 2  # bytes of one second of the players' PCM (mono s16le, 44.1 kHz)


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


def outbox_events(agent: Any, type_: str | None = None) -> list[dict[str, Any]]:
    """The events still in the agent's outbox (not yet acknowledged), oldest first; ``type_`` filters."""
    found = [json.loads(p.payload) for p in agent.outbox.pending()]
    return [e for e in found if type_ is None or e["type"] == type_]


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


def media_args(media: Media) -> dict[str, Any]:
    """A media reference as a command's ``media`` argument."""
    ref = media.ref
    return {"sha256": ref.sha256, "path": ref.path, "bytes": ref.bytes, "duration_ms": ref.duration_ms}


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


def tones(pcm: bytes, window_ms: int = 100, rate: int = 44100, silence_rms: float = 300.0) -> list[float | None]:
    """The frequency of each ``window_ms`` window of mono s16le PCM (by zero crossings), None where silent."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    n = rate * window_ms // 1000
    found: list[float | None] = []
    for i in range(0, len(samples) - n + 1, n):
        window = samples[i : i + n]
        if math.sqrt(sum(x * x for x in window) / n) < silence_rms:
            found.append(None)
            continue
        crossings = sum(1 for a, b in zip(window, window[1:], strict=False) if (a < 0) != (b < 0))
        found.append(crossings * 1000 / window_ms / 2)
    return found


def classify(windows: list[float | None], frequencies: tuple[int, ...], tolerance: float = 0.05) -> list[Any]:
    """Each window as the frequency it matches (within ``tolerance``), None for silence, ``"?"`` for neither."""
    out: list[Any] = []
    for f in windows:
        if f is None:
            out.append(None)
            continue
        out.append(next((ref for ref in frequencies if abs(f - ref) <= ref * tolerance), "?"))
    return out


def runs(labels: list[Any]) -> list[tuple[Any, int]]:
    """Consecutive equal labels as ``(label, count)``."""
    out: list[tuple[Any, int]] = []
    for label in labels:
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1] + 1)
        else:
            out.append((label, 1))
    return out


def ffmpeg_pids(marker: str) -> list[int]:
    """Pids of running ffmpeg processes whose command line contains ``marker`` (read from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"ffmpeg" in Path(os.fsdecode(argv[0])).name.encode() and marker.encode() in b" ".join(argv):
            found.append(int(proc.name))
    return found


# ------------------------------------------------------------------ live streams


def raw_mp3(directory: Path, seconds: float, freq: int) -> bytes:
    """A tone as bare MP3 frames (mono, 48 kbps CBR = 6,000 bytes a second; no ID3 or Xing header), for looping."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    out = directory / f"stream-{freq}.mp3"
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency={freq}:duration={seconds}:sample_rate=44100", "-ac", "1", "-b:a", "48k",
         "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", str(out)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


class IcecastServer:
    """A live MP3 stream the way Icecast serves one: HTTP/1.0, no length, a burst on connect (Icecast sends
    64 kB by default, 10 s at 48 kbps; this one 2 s), then real time.

    ``stop()`` closes the listener and every listener's connection (the station
    went off the air); ``start()`` again serves on the same port.
    """

    BYTES_PER_S = 6000

    def __init__(self, data: bytes, burst_s: float = 2.0) -> None:
        self.data = data
        self.burst = int(burst_s * self.BYTES_PER_S)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/live.mp3"
        self.connections = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._on_air = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                with server._lock:
                    server.connections += 1
                    server._sockets.append(self.connection)
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("icy-name", "loaxa test station")
                self.end_headers()
                start, sent, pos = time.monotonic(), 0, 0
                data = server.data
                try:
                    while server._on_air.is_set():
                        due = server.burst + int((time.monotonic() - start) * server.BYTES_PER_S)
                        n = min(due - sent, 1500)
                        if n <= 0:
                            time.sleep(0.02)
                            continue
                        chunk = (data[pos:] + data)[:n] if pos + n > len(data) else data[pos : pos + n]
                        pos = (pos + n) % len(data)
                        self.wfile.write(chunk)
                        sent += n
                except OSError:
                    pass

        return Handler

    def start(self) -> None:
        """Go on the air (again) on the same port."""
        self._on_air.set()
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="icecast", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Off the air: refuse new listeners and cut the connected ones."""
        self._on_air.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)


class HlsStation:
    """A live HLS stream: ffmpeg writes 1 s AAC segments of a tone in real time; http.server serves them."""

    def __init__(self, directory: Path, freq: int) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            pytest.skip("ffmpeg is not installed")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.playlist = self.dir / "live.m3u8"
        self._encoder = subprocess.Popen(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
             f"sine=frequency={freq}:sample_rate=44100", "-ac", "1", "-c:a", "aac", "-b:a", "64k", "-f", "hls",
             "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments+omit_endlist",
             str(self.playlist)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        directory_ = str(self.dir)

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=directory_, **kwargs)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/live.m3u8"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hls", daemon=True)
        self._thread.start()

    def segments(self) -> int:
        """How many segments the playlist lists now."""
        try:
            return self.playlist.read_text().count("#EXTINF")
        except OSError:
            return 0

    def close(self) -> None:
        """Stop the encoder and the web server."""
        self._encoder.terminate()
        try:
            self._encoder.wait(5)
        except subprocess.TimeoutExpired:
            self._encoder.kill()
            self._encoder.wait()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


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
