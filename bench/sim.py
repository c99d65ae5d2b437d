"""Benchmark: how many simulated receivers one process holds, and how fast one message fans out to them.

    .venv/bin/python bench/sim.py [--counts 1000,2000,5000,10000] [--rounds 5]

Starts its own Mosquitto on a free port (raising the file limit so it can
hold 10,000 connections). For each count, a fresh child process runs
``receiver.swarm.Swarm`` (one thread, a selector, raw paho clients) and
reports: the resident memory the receivers added, the time to connect them
all, and the delay from a signed QoS 1 command's publish to its arrival at
each receiver (p50/p99 over all receivers and rounds). The baseline row is the
same pool of bare paho clients without any receiver logic, measured in the
same run. Stops once the p99 passes one second. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        pass


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def run_one(count: int, port: int, rounds: int, bare: bool) -> dict[str, float]:
    """In a child process: build, connect, fan out ``rounds`` commands, report."""
    from receiver.mqtt.pool import ClientPool
    from receiver.swarm import Swarm
    from schedules import signing, topics
    from schedules.commands import make_command

    _raise_nofile()
    key = signing.generate_private_key()
    scope = "area/bench"
    arrivals: list[float] = []
    lock = threading.Lock()

    def record(*_args: object) -> None:
        t = time.time()
        with lock:
            arrivals.append(t)

    base_rss = _rss_mb()
    t0 = time.monotonic()
    if bare:
        pool = ClientPool("127.0.0.1", port)
        for n in range(count):
            pc = pool.add(
                f"bench-bare-{n}",
                will_topic=None,
                username=None,
                password=None,
                on_connected=lambda pc: pc.subscribe([topics.cmd(scope)]),
                on_message=record,
                on_published=lambda pc, mid: None,
            )
            pool.call_soon(pc.connect)
        pool.start()
        stop = pool.stop
    else:
        swarm = Swarm(count, "127.0.0.1", port, signing.public_key_to_text(key.public_key()), scopes=[scope],
                      prefix=f"bench{os.getpid()}-", on_receive=record)
        pool = swarm.pool
        swarm.start()
        stop = swarm.stop
    clients = list(pool.clients)

    def connected() -> int:
        return sum(1 for pc in clients if pc.connected)

    deadline = time.monotonic() + 120
    while connected() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    connect_s = time.monotonic() - t0
    ok = connected()
    time.sleep(1.0)  # subscriptions settle
    rss = _rss_mb()
    # The sender lives in the same selector loop: paho's own loop thread uses select(), which
    # cannot watch a descriptor above 1024, and this process holds thousands.
    sender = pool.add(f"bench-sender-{os.getpid()}", will_topic=None, username=None, password=None,
                      on_connected=lambda pc: None, on_message=lambda *a: None, on_published=lambda pc, mid: None)
    pool.call_soon(sender.connect)
    while not sender.connected:
        time.sleep(0.01)
    delays: list[float] = []
    for _ in range(rounds):
        with lock:
            arrivals.clear()
        command = make_command(scope, "resync", now_ms=time.time_ns() // 1_000_000)
        payload = signing.sign(key, command.to_body())
        sent = time.time()
        pool.call_soon(lambda payload=payload: sender.publish(topics.cmd(scope), payload, qos=1))
        wait_until = time.monotonic() + 30
        while time.monotonic() < wait_until:
            with lock:
                if len(arrivals) >= ok:
                    break
            time.sleep(0.01)
        time.sleep(0.2)
        with lock:
            delays += [a - sent for a in arrivals]
        time.sleep(0.3)
    stop()
    return {
        "count": count,
        "connected": ok,
        "connect_s": round(connect_s, 2),
        "rss_mb": round(rss, 1),
        "added_mb": round(rss - base_rss, 1),
        "p50_ms": round(_pct(delays, 50) * 1000, 1) if delays else -1,
        "p99_ms": round(_pct(delays, 99) * 1000, 1) if delays else -1,
        "received": len(delays),
        "expected": ok * rounds,
    }


def _start_broker() -> tuple[subprocess.Popen[bytes], int, Path]:
    from controller.broker import free_port, mosquitto_binary, wait_for_port

    binary = mosquitto_binary() or shutil.which("mosquitto")
    if binary is None:
        sys.exit("mosquitto is not installed")
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="loaxa-bench-"))
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
        "max_inflight_messages 0\n",
        encoding="utf-8",
    )
    _raise_nofile()
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 10)
    return proc, port, tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,2000,5000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.port, args.rounds, args.bare)))
        return
    broker, port, tmp = _start_broker()
    try:
        print(f"{'what':>10} {'count':>6} {'conn':>6} {'connect s':>9} {'RSS MB':>7} {'added MB':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'recv/exp':>13}")
        counts = [int(c) for c in args.counts.split(",")]
        for bare in (True, False):
            for count in counts[:1] if bare else counts:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", str(count), "--port", str(port), "--rounds", str(args.rounds)]
                    + (["--bare"] if bare else []),
                    capture_output=True, text=True, timeout=600,
                )
                if out.returncode != 0:
                    print(f"count {count}: failed\n{out.stderr[-2000:]}")
                    break
                r = json.loads(out.stdout.strip().splitlines()[-1])
                label = "raw paho" if bare else "receivers"
                print(f"{label:>10} {r['count']:>6} {r['connected']:>6} {r['connect_s']:>9} {r['rss_mb']:>7} "
                      f"{r['added_mb']:>8} {r['p50_ms']:>7} {r['p99_ms']:>7} {r['received']:>6}/{r['expected']:<6}",
                      flush=True)
                if not bare and (r["p99_ms"] > 1000 or r["connected"] < count):
                    print(f"stopping: p99 {r['p99_ms']} ms or only {r['connected']}/{count} connected")
                    break
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
