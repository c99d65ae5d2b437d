"""Start skew: 20 real receiver processes on one host play the same item together (loose bound 50 ms).

The 10 ms p99 target is measured by ``bench/skew.py``; this test only guards against gross regressions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from schedules import topics

from rx_support import (
    Broker,
    Collector,
    Media,
    MediaServer,
    content_bytes,
    make_item,
    now_ms,
    signed_conf,
    signed_manifest,
    toml_text,
    unique,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
RECEIVERS = 20


@pytest.mark.e2e
def test_twenty_receiver_processes_start_within_50_ms(
    tmp_path: Path,
    broker: Broker,
    media_server: MediaServer,
    sine_mp3: Media,
    signing_key: object,
    public_key_text: str,
    collector: Callable[[list[str]], Collector],
) -> None:
    media_server.add(sine_mp3)
    area = f"area/{unique()}"
    ids = [unique(f"skew{n:02d}-") for n in range(RECEIVERS)]
    pub = collector([f"{topics.PREFIX}/rx/+/status"])
    procs: list[subprocess.Popen[bytes]] = []
    sink_dirs = []
    try:
        for rx in ids:
            pub.publish(topics.conf(rx), signed_conf(signing_key, rx, 1, [area]), retain=True)
            config = tmp_path / f"{rx}.toml"
            sink_dirs.append(tmp_path / rx / "sink")
            config.write_text(
                toml_text(
                    {
                        "rx_id": rx,
                        "mqtt_url": broker.url,
                        "controller_public_key": public_key_text,
                        "media_base_url": media_server.url,
                        "token": media_server.token,
                        "state_dir": str(tmp_path / rx / "state"),
                        "sink": "file",
                        "sink_dir": str(sink_dirs[-1]),
                        # Twenty ffmpeg start-ups at once on a loaded CI box need more than the default 1 s.
                        "preroll_ms": 3000,
                    }
                ),
                encoding="utf-8",
            )
            with (tmp_path / f"{rx}.log").open("wb") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "receiver", "run", "--config", str(config)],
                        cwd=REPO,
                        env=dict(os.environ, PYTHONUNBUFFERED="1"),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        wait_until(lambda: all(pub.on(topics.rx_status(rx))[-1:] == [b"online"] for rx in ids), timeout=90)
        start = now_ms() + 8000
        item = make_item("skew-item", start, 2000, sine_mp3.ref)
        pub.publish(topics.sched(area), signed_manifest(signing_key, area, 1, [item]), retain=True)

        def closed() -> list[dict[str, object]] | None:
            found = []
            for d in sink_dirs:
                files = list(d.glob("*.json")) if d.exists() else []
                if not files:
                    return None
                data = json.loads(files[0].read_text())
                if data["closed_ms"] is None:
                    return None
                found.append(data)
            return found

        sidecars = wait_until(closed, timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pub.publish(topics.sched(area), b"", retain=True)
        for rx in ids:
            pub.publish(topics.conf(rx), b"", retain=True)
    firsts = [float(s["first_sample_ms"]) for s in sidecars]  # type: ignore[arg-type]
    skew = max(firsts) - min(firsts)
    assert skew < 50, f"start skew {skew:.1f} ms"
    assert all(abs(f - start) < 50 for f in firsts)
    assert all(content_bytes(s) == 2 * 44100 * 2 for s in sidecars)
