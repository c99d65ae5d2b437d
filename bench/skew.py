"""Benchmark: how closely N receiver processes on one host start the same items (target: 10 ms p99).

    .venv/bin/python bench/skew.py [--receivers 20] [--items 5]

Starts its own Mosquitto and a media HTTP server, generates a 2 s sine MP3
with ffmpeg, runs N ``loaxa-receiver run`` processes with the file sink, and
publishes one signed manifest with ``--items`` items 4 s apart. Each file
sink's sidecar holds the wall-clock time of its first sample. Reports, over
the items: the spread (latest minus earliest first sample across receivers)
p50/p99/max, and each receiver's error against the planned start p50/p99.
The baseline is the same processes' clock: every number is measured against
the one system clock of this host. Not a test: nothing asserts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller.broker import free_port, mosquitto_binary, wait_for_port  # noqa: E402
from schedules import signing, topics  # noqa: E402
from schedules.conf import ReceiverConf  # noqa: E402
from schedules.manifest import Item, Manifest, MediaRef  # noqa: E402


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"skew-bench-{os.getpid()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=20)
    parser.add_argument("--items", type=int, default=5)
    parser.add_argument("--preroll-ms", type=int, default=3000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loaxa-skew-"))
    procs: list[subprocess.Popen[bytes]] = []
    broker = None
    httpd = None
    try:
        mp3 = tmp / "sine.mp3"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "sine=frequency=440:duration=2:sample_rate=44100", "-ac", "1", "-b:a", "48k", str(mp3)],
                       check=True, capture_output=True)
        data = mp3.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        ref = MediaRef(sha256=sha, path=f"/media/{sha}.mp3", bytes=len(data), duration_ms=2000)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *a: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = data if self.path == ref.path else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        binary = mosquitto_binary()
        if binary is None:
            sys.exit("mosquitto is not installed")
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, 10)

        key = signing.generate_private_key()
        area = "area/skew-bench"
        ids = [f"skew-{n:03d}" for n in range(args.receivers)]
        _publish(port, [(topics.conf(rx), signing.sign(key, ReceiverConf(rx, 1, [area]).to_body())) for rx in ids])
        for rx in ids:
            config = tmp / f"{rx}.toml"
            values = {
                "rx_id": rx, "mqtt_url": f"mqtt://127.0.0.1:{port}",
                "controller_public_key": signing.public_key_to_text(key.public_key()),
                "media_base_url": f"http://127.0.0.1:{httpd.server_address[1]}", "token": "bench",
                "state_dir": str(tmp / rx / "state"), "sink": "file", "sink_dir": str(tmp / rx / "sink"),
                "preroll_ms": args.preroll_ms,
            }
            config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
            procs.append(subprocess.Popen([sys.executable, "-m", "receiver", "run", "--config", str(config)],
                                          cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        time.sleep(max(5.0, args.receivers * 0.4))  # start-up of the processes
        first = time.time_ns() // 1_000_000 + 5000
        items = [Item(f"skew-{i}", "", first + i * 4000, 2000, "normal", ref) for i in range(args.items)]
        now = time.time_ns() // 1_000_000
        manifest = Manifest(area, 1, now, now, now + 48 * 3600_000, items)
        _publish(port, [(topics.sched(area), signing.sign(key, manifest.to_body()))])
        deadline = time.monotonic() + 10 + args.items * 4
        while time.monotonic() < deadline:
            done = sum(1 for rx in ids for _ in (tmp / rx / "sink").glob("*.json"))
            if done >= len(ids) * args.items:
                break
            time.sleep(0.5)
        time.sleep(2.5)
        spreads: list[float] = []
        errors: list[float] = []
        for item in items:
            firsts = []
            for rx in ids:
                for path in (tmp / rx / "sink").glob(f"{item.id}-*.json"):
                    first_ms = json.loads(path.read_text())["first_sample_ms"]
                    if first_ms is not None:
                        firsts.append(first_ms)
                        errors.append(abs(first_ms - item.start_ms))
            if len(firsts) == len(ids):
                spreads.append(max(firsts) - min(firsts))
            else:
                print(f"{item.id}: only {len(firsts)}/{len(ids)} receivers played it")
        if spreads:
            print(f"receivers {len(ids)}, items {len(spreads)}")
            print(f"start spread across receivers (ms): p50 {_pct(spreads, 50):.2f}  p99 {_pct(spreads, 99):.2f}  "
                  f"max {max(spreads):.2f}  (target p99 <= 10)")
            print(f"error against the planned start (ms): p50 {_pct(errors, 50):.2f}  p99 {_pct(errors, 99):.2f}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        if httpd is not None:
            httpd.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
