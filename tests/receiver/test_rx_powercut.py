"""Power cuts (kill -9 of a real receiver process) during a download and during playback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from receiver.outbox import Outbox
from schedules.manifest import Item

from rx_support import (
    SECOND,
    Media,
    MediaServer,
    free_port,
    make_item,
    now_ms,
    signed_manifest,
    sine_mp3_file,
    toml_text,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def six_s_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 6.0, 523)


def _setup(tmp_path: Path, media_server: MediaServer, public_key_text: str, signing_key: Any, item: Item) -> Path:
    rx = "rx-powercut"
    state = tmp_path / "state"
    config = tmp_path / "rx.toml"
    config.write_text(
        toml_text(
            {
                "rx_id": rx,
                "mqtt_url": f"mqtt://127.0.0.1:{free_port()}",  # no broker: the cut is about the box alone
                "controller_public_key": public_key_text,
                "media_base_url": media_server.url,
                "token": media_server.token,
                "state_dir": str(state),
                "sink": "file",
                "sink_dir": str(tmp_path / "sink"),
            }
        ),
        encoding="utf-8",
    )
    # The manifest arrived during an earlier run and was stored.
    (state / "manifests").mkdir(parents=True)
    scope = f"rx/{rx}"
    (state / "manifests" / f"rx%2F{rx}.json").write_bytes(signed_manifest(signing_key, scope, 1, [item]))
    return config


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "receiver", "run", "--config", str(config)],
            cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def long_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 40.0, 523)


@pytest.mark.e2e
def test_kill_during_download_leaves_no_playable_partial_file(
    tmp_path: Path, media_server: MediaServer, long_mp3: Media, public_key_text: str, signing_key: Any
) -> None:
    six_s_mp3 = long_mp3  # 240 kB: written to the part file 64 kB at a time
    media_server.add(six_s_mp3)
    media_server.throttle_s = 0.05  # about 3 s for the whole file
    item = make_item("later", now_ms() + 3600_000, 6000, six_s_mp3.ref)
    config = _setup(tmp_path, media_server, public_key_text, signing_key, item)
    media = tmp_path / "state" / "media"
    part = media / "tmp" / f"{six_s_mp3.ref.sha256}.part"
    proc = _start(config, tmp_path / "log")
    try:
        wait_until(lambda: part.exists() and part.stat().st_size >= 65536, timeout=30)
        proc.kill()  # SIGKILL: no clean-up runs
        proc.wait(timeout=10)
    finally:
        _stop(proc)
    assert not list(media.glob(f"{six_s_mp3.ref.sha256}*")), "only the .part may exist after the cut"
    assert part.exists() and part.stat().st_size < len(six_s_mp3.data)
    media_server.throttle_s = 0.0
    proc = _start(config, tmp_path / "log")
    try:
        final = media / f"{six_s_mp3.ref.sha256}.mp3"
        wait_until(final.exists, timeout=30)
    finally:
        _stop(proc)
    assert final.read_bytes() == six_s_mp3.data
    assert not part.exists()
    assert any(r["range"] and r["range"] != "bytes=0-" for r in media_server.requests), "resumed with Range"


@pytest.mark.e2e
def test_kill_during_playback_resumes_at_the_elapsed_offset(
    tmp_path: Path, media_server: MediaServer, six_s_mp3: Media, public_key_text: str, signing_key: Any
) -> None:
    media_server.add(six_s_mp3)
    start = now_ms() + 5000
    item = make_item("long-news", start, 6000, six_s_mp3.ref)
    config = _setup(tmp_path, media_server, public_key_text, signing_key, item)
    sink = tmp_path / "sink"
    proc = _start(config, tmp_path / "log")
    try:
        wait_until(lambda: list(sink.glob("*.json")), timeout=30)
        wait_until(lambda: now_ms() > start + 1500, timeout=10)
        proc.kill()
        proc.wait(timeout=10)
        killed_at = now_ms()
        proc = _start(config, tmp_path / "log")
        wait_until(lambda: len(list(sink.glob("*.json"))) == 2, timeout=30)
        second = sink / f"long-news-{start}.2.json"
        wait_until(lambda: json.loads(second.read_text())["closed_ms"] is not None, timeout=30)
    finally:
        _stop(proc)
    resumed = json.loads(second.read_text())
    offset_ms = (start + 6000 - resumed["first_sample_ms"]) - resumed["bytes"] / SECOND * 1000
    assert abs(offset_ms) < 200, "the resumed part ends when the item ends"
    assert resumed["first_sample_ms"] > killed_at
    assert resumed["bytes"] < 6000 * SECOND / 1000 - (killed_at - start) * SECOND / 1000 + SECOND * 0.2
    box = Outbox(tmp_path / "state" / "outbox.db")
    try:
        started = [json.loads(p.payload) for p in box.pending() if b"playback.started" in p.payload]
    finally:
        box.close()
    assert [e["offset_ms"] for e in started][0] == 0 and started[-1]["offset_ms"] >= killed_at - start
