"""The one-thread simulator against the real broker: protocol, trust, faults, and 1,000 receivers in 250 MB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.services import commands as controller_commands
from receiver.swarm import SimReceiver, Swarm
from schedules import signing, topics

from rx_support import Broker, Collector, Media, make_item, now_ms, signed_conf, signed_manifest, unique, wait_until

REPO = Path(__file__).resolve().parents[2]


def test_swarm_plays_obeys_refuses_and_survives_a_cut(
    broker: Broker,
    collector: Callable[[list[str]], Collector],
    signing_key: Any,
    public_key_text: str,
    sine_mp3: Media,
) -> None:
    prefix = unique("sw") + "-"
    area = f"area/{unique()}"
    seen: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def on_event(rx: SimReceiver, event: dict[str, Any]) -> None:
        with lock:
            seen.append((rx.rx, event))

    def of(type_: str) -> list[tuple[str, dict[str, Any]]]:
        with lock:
            return [(rx, e) for rx, e in seen if e["type"] == type_]

    swarm = Swarm(20, broker.host, broker.port, public_key_text, prefix=prefix, on_event=on_event)
    ids = [rx.rx for rx in swarm.receivers]
    events_in = collector([f"{topics.PREFIX}/rx/+/events", f"{topics.PREFIX}/rx/+/status"])
    for rx in ids:  # each conf lists the area: the receivers subscribe to it when the conf arrives
        events_in.publish(topics.conf(rx), signed_conf(signing_key, rx, 1, [area]), retain=True)
    swarm.start()
    try:
        assert swarm.wait_connected(30)
        wait_until(lambda: len(of("conf.accepted")) == 20, timeout=20)
        start = now_ms() + 1500
        item = make_item("bulletin", start, 1000, sine_mp3.ref)
        events_in.publish(topics.sched(area), signed_manifest(signing_key, area, 1, [item]), retain=True)
        wait_until(lambda: len(of("playback.finished")) == 20, timeout=20)
        starts = [e["actual_start_ms"] for _, e in of("playback.started")]
        assert max(starts) - min(starts) < 200 and abs(min(starts) - start) < 200

        # A command reaches all; the same bytes again are refused as a replay; a forged manifest is refused.
        _topic, payload, _command = controller_commands.build(signing_key, area, "resync")
        events_in.publish(topics.cmd(area), payload)
        events_in.publish(topics.cmd(area), payload)
        wait_until(lambda: len(of("command.refused")) == 20, timeout=20)
        assert len(of("command.ack")) == 20
        assert {e["code"] for _, e in of("command.refused")} == {"cmd.replay"}
        forged = signed_manifest(signing.generate_private_key(), area, 2, [item])
        events_in.publish(topics.sched(area), forged)
        wait_until(lambda: len(of("manifest.refused")) == 20, timeout=20)
        assert {e["code"] for _, e in of("manifest.refused")} == {"sig.invalid"}

        # A network cut: the will says offline; the fault raised meanwhile arrives after, exactly once.
        victim = swarm.receiver(ids[3])
        swarm.inject(lambda: victim.go_offline(2.0))
        status = topics.rx_status(victim.rx)
        wait_until(lambda: events_in.on(status)[-1:] == [b"offline"], timeout=20)
        swarm.inject(lambda: victim.amplifier_fault(True))
        wait_until(lambda: of("fault.raised"), timeout=5)
        wait_until(lambda: events_in.on(status)[-1:] == [b"online"], timeout=30)
        faults = wait_until(
            lambda: [p for p in events_in.on(topics.rx_events(victim.rx)) if b"amplifier_fault" in p], timeout=20
        )
        assert len(faults) == 1 and json.loads(faults[0])["rx"] == victim.rx
        wait_until(lambda: swarm.pending_events() == 0, timeout=20)
        # Every event each receiver reported reached the broker.
        for rx in ids:
            sent = [e["id"] for r, e in seen if r == rx]
            arrived = [json.loads(p)["id"] for p in events_in.on(topics.rx_events(rx))]
            assert sorted(set(arrived)) == sorted(sent)
    finally:
        swarm.stop()
        for rx in ids:
            events_in.publish(topics.conf(rx), b"", retain=True)
        events_in.publish(topics.sched(area), b"", retain=True)


def test_thousand_receivers_fit_in_250_mb(broker: Broker, public_key_text: str, tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "sim", "--count", "1000", "--mqtt-url", broker.url,
             "--public-key", public_key_text, "--scope", "area/load-test", "--prefix", unique("k") + "-"],
            cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(lambda: "1000/1000 connected" in stderr_path.read_text(errors="replace"), timeout=120)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        threads = int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])
        assert rss_kb < 250 * 1024, f"{rss_kb // 1024} MB"
        assert threads <= 4  # main, the pool, the reporter: not one per receiver
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in stderr_path.read_text(errors="replace")
