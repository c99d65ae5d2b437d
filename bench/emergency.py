"""Benchmark: an emergency from the API call to 1,000 receivers' ``playback.started`` at the controller.

    .venv/bin/python bench/emergency.py [--receivers 1000] [--rounds 3]

Starts its own Mosquitto on a free port, a controller (app, migrated SQLite database, its
services: broker link, telemetry ingest, scheduler, alert worker) on that broker, and, in a
child process, ``receiver.swarm.Swarm``: N simulated receivers of commune ``qd/phu``
(registered in the controller's database, so their events are ingested), one thread.
Measured in the same run, on the one clock of this host:

- baseline: a raw paho QoS 1 publish (a signed ``resync`` on ``cmd/area/qd/phu``) from
  publish to each receiver's receipt, p50/p99 over every receiver and round;
- the project's emergency: from the API call (``POST /api/v1/alerts`` through the Flask
  test client, with a bearer token as automation would) to each receiver's
  ``playback.started`` written in the controller's database (the telemetry ingest's
  commit), p50/p99; the alert's sound was made by a first alert, sent and stopped
  before, so the rounds reuse it (dispatch, not ffmpeg).

Where the time goes, per receiver (p50/p99): the API call, the worker's start of the
alert (``started_ms``, after the render-cache lookup), the command's arrival at the
receiver, the simulator's ``playback.started``, the event's commit at the controller; and
how long the ingest took to write them all. The simulator reports ``command.ack`` and
``playback.started`` at once (it does not download). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AREA = "qd/phu"
SCOPE = f"area/{AREA}"


def _wall() -> float:
    return time.time_ns() / 1e6


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        pass


# ---------------------------------------------------------------------------- the swarm (child process)

def run_swarm(count: int, port: int, public_key: str, prefix: str) -> None:
    """In a child process: the simulated receivers. Reads commands on stdin, answers one JSON line each.

    ``connected`` → how many are connected; ``dump`` → what happened since the last dump: every
    ``cmd/`` message's receipt ``[rx, ms, crc]`` (with each distinct payload once, by crc), and every
    ``command.ack`` / ``playback.started`` as the simulator reported it ``[rx, type, item_id, ms]``.
    """
    from receiver.swarm import SimReceiver, Swarm

    _raise_nofile()
    lock = threading.Lock()
    arrivals: list[tuple[str, float, int]] = []
    payloads: dict[int, str] = {}
    reported: list[tuple[str, str, str | None, float]] = []

    def on_receive(rx: SimReceiver, topic: str, payload: bytes) -> None:
        t = _wall()
        if "/cmd/" in topic:
            crc = zlib.crc32(payload)
            with lock:
                arrivals.append((rx.rx, t, crc))
                if crc not in payloads:
                    payloads[crc] = payload.decode("utf-8", "replace")

    def on_event(rx: SimReceiver, event: dict[str, Any]) -> None:
        if event["type"] in ("command.ack", "playback.started"):
            with lock:
                reported.append((rx.rx, event["type"], event.get("item_id"), _wall()))

    swarm = Swarm(count, "127.0.0.1", port, public_key, scopes=[SCOPE], prefix=prefix, on_receive=on_receive,
                  on_event=on_event)
    swarm.start()
    for line in sys.stdin:
        word = line.strip()
        if word == "connected":
            answer: Any = swarm.connected()
        elif word == "dump":
            with lock:
                answer = {"arrivals": list(arrivals), "payloads": dict(payloads), "reported": list(reported)}
                arrivals.clear()
                reported.clear()
        else:
            break
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    swarm.stop()


class SwarmProcess:
    """The child process running the swarm, asked over its stdin."""

    def __init__(self, count: int, port: int, public_key: str, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--swarm", str(count), "--port", str(port), "--key", public_key,
             "--prefix", prefix], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)

    def ask(self, word: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------- broker and controller

def _start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    from controller.broker import free_port, mosquitto_binary, wait_for_port

    binary = mosquitto_binary() or shutil.which("mosquitto")
    if binary is None:
        sys.exit("mosquitto is not installed")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 0\n", encoding="utf-8")
    _raise_nofile()
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 10)
    return proc, port


def _controller(tmp: Path, port: int, count: int, prefix: str) -> tuple[Any, str]:
    """A migrated controller with the district, an admin's bearer token and ``count`` receivers in qd/phu."""
    from controller import auth, create_app, db
    from controller.db import session_scope
    from controller.models import ApiToken, Area, Receiver, User
    from schedules.events import now_ms

    app = create_app({"VAR_DIR": str(tmp / "var"), "SECRET_KEY": "bench", "MQTT_URL": f"mqtt://127.0.0.1:{port}",
                      "MQTT_CLIENT_ID": f"bench-controller-{os.getpid()}", "LIVE_ICECAST": "off",
                      "TTS_ENGINES": "espeak", "PUBLIC_URL": "http://127.0.0.1:9"})
    db.upgrade(app.config["DATABASE_URL"])
    token = secrets.token_urlsafe(24)
    width = max(4, len(str(count)))
    with session_scope(app) as s:
        s.add_all([Area(id="hue", name="Huế", level="province", parent_id=None),
                   Area(id="qd", name="Quảng Điền", level="district", parent_id="hue"),
                   Area(id=AREA, name="Quảng Phú", level="commune", parent_id="qd")])
        s.flush()
        admin = User(username="admin", password_hash=auth.hash_password(secrets.token_hex(8)), role="admin",
                     area_id=None, created_ms=0)
        s.add(admin)
        s.flush()
        s.add(ApiToken(user_id=admin.id, name="bench", token_hash=auth.token_hash(token), created_ms=now_ms()))
        s.add_all([Receiver(id=f"{prefix}{n:0{width}d}", area_id=AREA, name=f"Cụm {n}",
                            token_hash=auth.token_hash(f"{prefix}{n}"), created_ms=0) for n in range(1, count + 1)])
    return app, token


def _settle(telemetry: Any, quiet_s: float = 1.5, limit_s: float = 300) -> None:
    """Until the ingest queue is empty and nothing new was written for ``quiet_s``."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = telemetry.ingested
        if n != last or telemetry._queue.qsize():
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def _committed(app: Any, alert_id: str, seen: dict[str, float], since_ms: int) -> int:
    """Stamp, with the time now, each receiver whose playback.started of the alert is newly in the database.

    Reads only the rows received from ``since_ms`` on (the poll must not load the controller it measures);
    returns where the next poll may start.
    """
    from sqlalchemy import select

    from controller.db import session_scope
    from controller.models import Event

    with session_scope(app) as s:
        rows = s.execute(select(Event.rx_id, Event.received_ms).where(
            Event.item_id == alert_id, Event.type == "playback.started", Event.received_ms >= since_ms)).all()
    t = _wall()
    for rx, _received in rows:
        seen.setdefault(rx, t)
    # received_ms is stamped before the commit: a row of an older stamp may become visible a little later.
    return max((r for _rx, r in rows), default=since_ms + 1000) - 1000


# ---------------------------------------------------------------------------- the measurements

def baseline(port: int, key: Any, swarm: SwarmProcess, expected: int, rounds: int) -> list[float]:
    """Raw paho: a signed resync published at QoS 1; ms from publish to each receiver's receipt."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from schedules import signing, topics
    from schedules.commands import make_command

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{os.getpid()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    delays: list[float] = []
    try:
        for _ in range(rounds):
            swarm.ask("dump")
            payload = signing.sign(key, make_command(SCOPE, "resync", now_ms=time.time_ns() // 1_000_000).to_body())
            crc = zlib.crc32(payload)
            sent = _wall()
            client.publish(topics.cmd(SCOPE), payload, qos=1)
            got: list[float] = []
            deadline = time.monotonic() + 30
            while len(got) < expected and time.monotonic() < deadline:
                time.sleep(0.3)
                got += [t for _rx, t, c in swarm.ask("dump")["arrivals"] if c == crc]
            delays += [t - sent for t in got]
            time.sleep(1.0)  # their acks reach the controller meanwhile
    finally:
        client.loop_stop()
        client.disconnect()
    return delays


def _call(client: Any, token: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float, float]:
    t0 = _wall()
    resp = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.get_json(), t0, _wall()


def emergency_round(app: Any, token: str, swarm: SwarmProcess, expected: int, body: dict[str, Any]) -> dict[str, Any]:
    """One alert from the API call to every receiver's playback.started in the controller's database (polled
    every 20 ms); stopped after."""
    from controller.db import session_scope
    from controller.models import Alert

    client = app.test_client()
    swarm.ask("dump")
    status, answer, t0, t1 = _call(client, token, "/api/v1/alerts", body)
    if status != 202:
        sys.exit(f"the alert was refused: {status} {answer}")
    alert_id = answer["alert"]["id"]
    committed: dict[str, float] = {}
    since = int(t0) - 1000
    deadline = time.monotonic() + 120
    while len(committed) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
        since = _committed(app, alert_id, committed, since)
    seen = swarm.ask("dump")
    with session_scope(app) as s:
        alert = s.get(Alert, alert_id)
        started_ms, sha = alert.started_ms, alert.media_sha256
    counts = app.test_client().get(f"/api/v1/alerts/{alert_id}",
                                   headers={"Authorization": f"Bearer {token}"}).get_json()["status"]["counts"]
    _call(client, token, f"/api/v1/alerts/{alert_id}/stop", {})
    alert_crcs = {crc for crc, text in seen["payloads"].items() if alert_id in text and '"stop"' not in text}
    arrived = {rx: t for rx, t, crc in seen["arrivals"] if int(crc) in {int(c) for c in alert_crcs}}
    sim_started = {rx: t for rx, type_, item, t in seen["reported"] if type_ == "playback.started" and item == alert_id}
    return {"id": alert_id, "sha": sha, "t0": t0, "t1": t1, "started_ms": started_ms, "arrived": arrived,
            "sim_started": sim_started, "committed": committed, "api_counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-max", type=int, default=None,
                        help="messages the telemetry ingest writes per transaction (1: one commit per message, as "
                             "before batching; default: controller.services.telemetry.BATCH_MAX)")
    parser.add_argument("--swarm", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="em-", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.swarm:
        run_swarm(args.swarm, args.port, args.key, args.prefix)
        return

    import logging

    logging.basicConfig(level=logging.ERROR)
    from controller import keys
    from controller.services import telemetry

    if args.batch_max is not None:
        telemetry.BATCH_MAX = args.batch_max
    count = args.receivers
    tmp = Path(tempfile.mkdtemp(prefix="loaxa-emergency-"))
    broker, port = _start_broker(tmp)
    swarm: SwarmProcess | None = None
    svc = None
    try:
        app, token = _controller(tmp, port, count, args.prefix)
        svc = app.extensions["loaxa.services"]
        svc.start()  # before the swarm: the controller's sockets are not among thousands
        if not svc.link.connected.wait(10):
            sys.exit("the controller did not reach the broker")
        swarm = SwarmProcess(count, port, keys.public_text(svc.key), args.prefix)
        deadline = time.monotonic() + 120
        while swarm.ask("connected") < count and time.monotonic() < deadline:
            time.sleep(0.2)
        connected = swarm.ask("connected")
        print(f"receivers {count}, connected {connected}; settling (their status, conf and manifest events)",
              flush=True)
        _settle(svc.telemetry)

        # The alert's sound, made once: the rounds reuse it.
        body = {"mode": "live", "areas": [AREA], "repeat": 1, "chime": False,
                "content": {"kind": "text", "text": "Nước sông Bồ đang lên nhanh, bà con chú ý."}}
        first = emergency_round(app, token, swarm, connected, body)
        print(f"first alert (its sound made: {first['started_ms'] - first['t0']:.0f} ms to start)", flush=True)
        _settle(svc.telemetry)

        raw = baseline(port, svc.key, swarm, connected, args.rounds)
        _settle(svc.telemetry)

        results = []
        for _ in range(args.rounds):
            results.append(emergency_round(app, token, swarm, connected, body))
            _settle(svc.telemetry)
        print(f"telemetry batch: at most {telemetry.BATCH_MAX} message(s) per transaction")
        report(raw, results, connected, first["sha"])
    finally:
        if swarm is not None:
            swarm.stop()
        if svc is not None:
            svc.stop()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def report(raw: list[float], results: list[dict[str, Any]], expected: int, sha: str) -> None:
    """Print the baseline, the emergency, their ratio and where the time went."""
    def line(label: str, values: list[float]) -> str:
        if not values:
            return f"{label:<52} (none)"
        return f"{label:<52} p50 {_pct(values, 50):8.1f}  p99 {_pct(values, 99):8.1f}  max {max(values):8.1f}  " \
               f"n {len(values)}"

    end_to_end, api, start, arrive, sim, commit = [], [], [], [], [], []
    for r in results:
        api.append(r["t1"] - r["t0"])
        start.append(r["started_ms"] - r["t0"])
        for rx, t in r["committed"].items():
            end_to_end.append(t - r["t0"])
            if rx in r["arrived"]:
                arrive.append(r["arrived"][rx] - r["started_ms"])
            if rx in r["sim_started"]:
                if rx in r["arrived"]:
                    sim.append(r["sim_started"][rx] - r["arrived"][rx])
                commit.append(t - r["sim_started"][rx])
        if r["sha"] != sha:
            print(f"note: round {r['id']} made a new sound ({r['sha']} != {sha})")
        missing = expected - len(r["committed"])
        if missing:
            print(f"note: {r['id']}: {missing} receiver(s) never had their playback.started committed")
    print(f"\nreceivers {expected}, rounds {len(results)} (ms, on this host's clock)")
    print(line("(a) raw paho QoS 1: publish -> receipt", [d for d in raw]))
    print(line("(b) emergency: API call -> playback.started committed", end_to_end))
    if raw and end_to_end:
        print(f"ratio (b)/(a): p50 {_pct(end_to_end, 50) / _pct(raw, 50):.1f}x  "
              f"p99 {_pct(end_to_end, 99) / _pct(raw, 99):.1f}x   (target: (b) p99 < 1000 ms, within 3x of (a))")
    print("\nwhere (b)'s time went:")
    print(line("  API call (POST /alerts, 202)", api))
    print(line("  API call -> alert started (cache lookup, sign, publish)", start))
    print(line("  started -> command at the receiver", arrive))
    print(line("  command -> simulator's playback.started", sim))
    print(line("  playback.started -> committed by the controller", commit))
    spans = [max(r["committed"].values()) - min(r["sim_started"].values()) for r in results
             if r["committed"] and r["sim_started"]]
    if spans:
        print(f"  ingest: first playback.started reported -> last committed, per round: "
              f"{', '.join(f'{x:.0f}' for x in spans)} ms (each round also brings {expected} command.ack)")
    print(f"  API's own count at the end of each round: {[r['api_counts']['playing'] for r in results]} playing")


if __name__ == "__main__":
    main()
