"""Emergency broadcasts end to end: the controller's API, Mosquitto, real receiver processes and their file sinks.

A controller on HTTP with its services (``live_app`` of tests/conftest.py) and any number
of ``loaxa-receiver run`` processes, each provisioned with the controller's CLI, with its
own state directory, log and file sink. What the tests hear is what the sinks recorded
(PCM and sidecar: first sample, close, tags); what they read of the controller is its API
and the events it ingested.

- a live alert pre-empts the programme on every targeted receiver and on no other, sounds
  like an alert (chime rising, the message three times, chime falling) and gives the
  programme back where it stands;
- a receiver that connects during an alert joins it; a stop silences every receiver within
  a second; one that connects after the stop never plays it;
- drill and live are told apart in the sink, the events and the as-run report;
- the live status the API reports while an alert runs, per area and per cluster.
"""

from __future__ import annotations

import array
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from controller.db import session_scope
from controller.models import Event
from schedules.events import now_ms

from helpers import tone, wait_until

pytestmark = pytest.mark.e2e

AUTH = ("admin", "pw-admin")
BIN = Path(sys.executable).parent
RATE = 44100
"""The players' PCM: mono s16le at 44.1 kHz."""
SECOND_BYTES = RATE * 2
WINDOW_S = 0.1
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
PROGRAMME_HZ = 220
MESSAGE_HZ = 300


# ---------------------------------------------------------------------------- receivers as processes

@dataclass
class Rx:
    """One receiver: its provisioned config, state directory (the sink is inside), log, and process."""

    name: str
    area: str
    config: Path
    state: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def sink(self) -> Path:
        """Where its file sink records (``<state>/sink``)."""
        return self.state / "sink"

    def sidecars(self, item_id: str) -> list[dict[str, Any]]:
        """The sink's sidecars of ``item_id`` (each play of it one file), in the order they started."""
        stem = item_id.replace("/", "_")
        found = []
        for path in self.sink.glob(f"{stem}-*.json"):
            try:
                found.append({**json.loads(path.read_text()), "pcm": str(path.with_suffix(".pcm"))})
            except (OSError, json.JSONDecodeError):  # rewritten atomically; absent for an instant at most
                continue
        return sorted(found, key=lambda s: s.get("first_sample_ms") or math.inf)

    def recorded(self) -> list[str]:
        """The item ids of everything its sink recorded."""
        return [json.loads(p.read_text())["item_id"] for p in self.sink.glob("*.json")] if self.sink.exists() else []


class Fleet:
    """Receivers provisioned with ``loaxa-controller provision`` and run as ``loaxa-receiver run`` processes."""

    def __init__(self, app: Flask, tmp_path: Path, mqtt_url: str) -> None:
        self.app = app
        self.dir = tmp_path / "fleet"
        self.dir.mkdir()
        self.mqtt_url = mqtt_url
        self.rx: dict[str, Rx] = {}

    def provision(self, *names_and_areas: tuple[str, str]) -> list[Rx]:
        """Register receivers (in parallel: each is one CLI process) and write their configs."""
        env = {**os.environ, "LOAXA_VAR_DIR": self.app.config["VAR_DIR"],
               "LOAXA_PUBLIC_URL": self.app.config["PUBLIC_URL"]}
        made, procs = [], []
        for name, area in names_and_areas:
            rx = Rx(name, area, self.dir / f"{name}.toml", self.dir / name, self.dir / f"{name}.log")
            procs.append(subprocess.Popen(
                [str(BIN / "loaxa-controller"), "provision", name, "--area", area, "--name", name.upper(),
                 "--mqtt-url", self.mqtt_url, "--out", str(rx.config), "--state-dir", str(rx.state),
                 "--sink", "file"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            made.append(rx)
        for rx, proc in zip(made, procs, strict=True):
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"provision {rx.name}: {out.decode(errors='replace')}"
            self.rx[rx.name] = rx
        dispatcher = self.app.extensions["loaxa.services"].dispatcher
        for rx in made:
            dispatcher.publish_receiver(rx.name)  # its conf at once (the fleet watch would, within 5 s)
        return made

    def start(self, *names: str) -> None:
        """Run these receivers as processes of their own."""
        for name in names:
            rx = self.rx[name]
            rx.log = open(rx.log_path, "ab")  # noqa: SIM115 - closed in stop()
            rx.proc = subprocess.Popen([sys.executable, "-m", "receiver", "run", "--config", str(rx.config)],
                                       stdout=rx.log, stderr=subprocess.STDOUT, cwd=self.dir)

    def add(self, *names_and_areas: tuple[str, str]) -> None:
        """Provision and start."""
        self.provision(*names_and_areas)
        self.start(*(name for name, _ in names_and_areas))

    def wait_online(self, *names: str, timeout: float = 30) -> None:
        """Until the controller says each is online (its retained ``online`` status was ingested)."""
        for name in names:
            wait_until(lambda name=name: _get(self.app, f"/api/v1/receivers/{name}")["receiver"]["online"],
                       timeout=timeout, what=f"{name} online (log: {self.rx[name].log_path})")

    def stop_all(self) -> None:
        """SIGTERM every process (kill after 15 s), close the logs."""
        running = [rx for rx in self.rx.values() if rx.proc is not None and rx.proc.poll() is None]
        for rx in running:
            assert rx.proc is not None
            rx.proc.send_signal(signal.SIGTERM)
        for rx in running:
            assert rx.proc is not None
            try:
                rx.proc.wait(15)
            except subprocess.TimeoutExpired:
                rx.proc.kill()
                rx.proc.wait()
        for rx in self.rx.values():
            if rx.log is not None:
                rx.log.close()

    def logs(self) -> str:
        """The tail of every log, for a failure message."""
        return "\n".join(f"--- {rx.name}\n{rx.log_path.read_text(errors='replace')[-3000:]}"
                         for rx in self.rx.values() if rx.log_path.exists())


@pytest.fixture
def controller(live_app: Flask) -> Flask:
    """The live controller of tests/conftest.py, speaking with the offline voice (no network here)."""
    live_app.config["TTS_ENGINES"] = "espeak"  # read when a sound is made, not at start
    return live_app


@pytest.fixture
def fleet(controller: Flask, tmp_path: Path, mqtt_url: str) -> Iterator[Fleet]:
    """Receivers as processes; all of them stopped at teardown."""
    made = Fleet(controller, tmp_path, mqtt_url)
    yield made
    made.stop_all()


# ---------------------------------------------------------------------------- the API and what was ingested

def _get(app: Flask, path: str, **params: Any) -> dict[str, Any]:
    resp = requests.get(app.config["PUBLIC_URL"] + path, auth=AUTH, params=params, timeout=10)
    assert resp.status_code == 200, (path, resp.status_code, resp.text[:500])
    return resp.json()


def _post(app: Flask, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    resp = requests.post(app.config["PUBLIC_URL"] + path, auth=AUTH, json=body, timeout=30)
    assert resp.status_code == status, (path, resp.status_code, resp.text[:1000])
    return resp.json()


def _events(app: Flask, rx_id: str, item_id: str | None = None, type_: str | None = None) -> list[dict[str, Any]]:
    """What the controller ingested from ``rx_id`` (oldest first), optionally of one item and one type."""
    with session_scope(app) as db:
        q = select(Event.body).where(Event.rx_id == rx_id).order_by(Event.ts_ms)
        if item_id is not None:
            q = q.where(Event.item_id == item_id)
        if type_ is not None:
            q = q.where(Event.type == type_)
        return [json.loads(b) for b in db.scalars(q)]


def _upload_tone(app: Flask, tmp_path: Path, seconds: float, frequency: int, area: str, title: str) -> int:
    """A tone uploaded as a bulletin, once it is ready to play: its id."""
    src = tone(tmp_path / f"{title}.mp3", seconds, frequency=frequency)
    with open(src, "rb") as fh:
        resp = requests.post(app.config["PUBLIC_URL"] + "/api/v1/bulletins", auth=AUTH, timeout=30,
                             data={"title": title, "area": area}, files={"file": (src.name, fh, "audio/mpeg")})
    assert resp.status_code == 202, resp.text
    return int(resp.json()["bulletin"]["id"])


def _ready(app: Flask, *bulletin_ids: int) -> None:
    for bid in bulletin_ids:
        wait_until(lambda bid=bid: _get(app, f"/api/v1/bulletins/{bid}")["bulletin"]["status"] == "ready",
                   timeout=60, what=f"bulletin {bid} transcoded")


def _alert_when(app: Flask, alert_id: str, predicate: Any, what: str, timeout: float = 60) -> dict[str, Any]:
    """Poll GET /alerts/<id> until ``predicate(answer)``; the answer."""
    return wait_until(lambda: (a := _get(app, f"/api/v1/alerts/{alert_id}")) and predicate(a) and a,
                      timeout=timeout, what=what)


def _clusters(answer: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {c["id"]: (c["state"], c["reason"]) for c in answer["status"]["clusters"]}


def _schedule(app: Flask, bulletin_id: int, area: str, lead_s: float) -> tuple[str, int]:
    """A programme item of the bulletin for ``area``, ``lead_s`` from now (local time, whole seconds):
    ``(occurrence id, start ms)``."""
    start_local = datetime.fromtimestamp(now_ms() / 1000 + lead_s, TZ).replace(microsecond=0)
    item = _post(app, "/api/v1/programme/items", {"bulletin_id": bulletin_id, "area": area,
                                                   "start": start_local.strftime("%Y-%m-%d %H:%M:%S")}, 201)["item"]
    start_ms = int(start_local.timestamp() * 1000)
    assert item["status"] == "approved" and item["start_ms"] == start_ms, item
    return item["occurrences"][0], start_ms


# ---------------------------------------------------------------------------- listening to a recording

def _windows(pcm_path: str) -> tuple[list[float], list[float]]:
    """Per 100 ms window of a sink recording: its RMS level and its pitch (zero crossings per second / 2)."""
    samples = array.array("h")
    samples.frombytes(Path(pcm_path).read_bytes())
    n = int(RATE * WINDOW_S)
    levels, pitches = [], []
    for i in range(0, len(samples) - n + 1, n):
        chunk = samples[i:i + n]
        levels.append(math.sqrt(sum(x * x for x in chunk) / n))
        crossings = sum(1 for a, b in zip(chunk, chunk[1:], strict=False) if (a < 0) != (b < 0))
        pitches.append(crossings / 2 / WINDOW_S)
    return levels, pitches


def _runs(indices: list[int], hole: int = 2) -> list[list[int]]:
    """Consecutive window indices grouped into runs (a hole of up to ``hole`` windows does not split a run)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i - runs[-1][-1] <= hole + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


# ---------------------------------------------------------------------------- a. pre-emption, targets only

def test_a_live_alert_preempts_the_programme_on_its_targets_only_and_the_programme_resumes(
        controller: Flask, fleet: Fleet, tmp_path: Path) -> None:
    fleet.add(("phu-1", "qd/phu"), ("phu-2", "qd/phu"), ("an-1", "qd/an"))
    programme = _upload_tone(controller, tmp_path, 60, PROGRAMME_HZ, "qd", "Chương trình thời sự")
    message = _upload_tone(controller, tmp_path, 2, MESSAGE_HZ, "qd", "Báo động lũ")
    fleet.wait_online("phu-1", "phu-2", "an-1")
    _ready(controller, programme, message)
    occurrence, start_ms = _schedule(controller, programme, "qd", lead_s=6)

    # The programme plays on all three.
    for name in ("phu-1", "phu-2", "an-1"):
        wait_until(lambda name=name: fleet.rx[name].sidecars(occurrence), timeout=30,
                   what=f"{name} playing the programme\n{fleet.logs()}")
    time.sleep(1.0)
    body = {"mode": "live", "areas": ["qd/phu"], "content": {"kind": "bulletin", "bulletin_id": message},
            "repeat": 3, "gap_s": 1, "chime": True}
    alert = _post(controller, "/api/v1/alerts", body, 202)["alert"]
    alert_id = alert["id"]
    assert alert["clusters"] == 2 and alert["scopes"] == ["area/qd/phu"], alert

    # Both targets record the alert, as live, to its end; the programme comes back after it.
    for name in ("phu-1", "phu-2"):
        wait_until(lambda name=name: (s := fleet.rx[name].sidecars(alert_id)) and s[0]["closed_ms"], timeout=60,
                   what=f"{name} to play the alert to its end\n{fleet.logs()}")
    done = _alert_when(controller, alert_id, lambda a: a["alert"]["status"] == "ended"
                       and all(c["state"] == "finished" for c in a["status"]["clusters"]),
                       what="the alert to end and both clusters to report it finished")
    assert done["alert"]["end_reason"] == "complete", done["alert"]
    duration_ms = done["alert"]["duration_ms"]
    for name in ("phu-1", "phu-2"):
        rx = fleet.rx[name]
        (played,) = rx.sidecars(alert_id)
        assert played["tags"] == {"priority": "emergency", "mode": "live"}, played
        # It ran to the end of its sound: nothing cut it short (not the controller's end of the alert either).
        finished = _events(controller, name, alert_id, "playback.finished")
        assert [e["end_reason"] for e in finished] in (["media_end"], ["complete"]), (name, finished)
        assert abs(Path(played["pcm"]).stat().st_size / SECOND_BYTES * 1000 - duration_ms) < 400, (played,
                                                                                                     duration_ms)
        # The programme: pre-empted, then played again from where the schedule stood.
        prog = wait_until(lambda rx=rx: len(s := rx.sidecars(occurrence)) >= 2 and s, timeout=15,
                          what=f"{name} to resume the programme\n{fleet.logs()}")
        assert prog[0]["closed_ms"] <= played["first_sample_ms"] + 50, (prog[0], played)
        assert prog[1]["first_sample_ms"] >= played["closed_ms"], (prog[1], played)
        assert prog[1]["first_sample_ms"] - played["closed_ms"] < 2000, (prog[1], played)
        started = wait_until(lambda name=name: len(e := _events(controller, name, occurrence, "playback.started"))
                             >= 2 and e, timeout=15, what=f"{name}: the programme's second start ingested")
        assert started[0]["offset_ms"] == 0 and started[1]["offset_ms"] > 10_000, started
        assert abs(started[1]["offset_ms"] - (prog[1]["first_sample_ms"] - start_ms)) < 500, (started, prog)
        first_end = _events(controller, name, occurrence, "playback.finished")[0]
        assert first_end["end_reason"] == "preempted", first_end
        ack = _events(controller, name, alert_id, "command.ack")
        assert [(a["action"], a.get("joined")) for a in ack] == [("emergency", None)], ack

    # an-1 (another commune) heard nothing of it: one programme recording, never interrupted.
    an = fleet.rx["an-1"]
    assert alert_id not in an.recorded()
    assert not _events(controller, "an-1", alert_id)
    (prog_an,) = an.sidecars(occurrence)
    assert prog_an["closed_ms"] is None, prog_an
    recorded_ms = Path(prog_an["pcm"]).stat().st_size / SECOND_BYTES * 1000
    assert abs(now_ms() - prog_an["first_sample_ms"] - recorded_ms) < 1000, (prog_an, recorded_ms)
    assert [e["type"] for e in _events(controller, "an-1", occurrence)] == ["playback.started"]

    # What phu-1 played, listened to per 100 ms: chime rising, the 300 Hz message three times, chime falling.
    (played,) = fleet.rx["phu-1"].sidecars(alert_id)
    levels, pitches = _windows(played["pcm"])
    loud = [i for i, level in enumerate(levels) if level > 500]
    message_windows = [i for i in loud if abs(pitches[i] - MESSAGE_HZ) < 30]
    chime_windows = [i for i in loud if pitches[i] > 450]
    detail = [(round(levels[i]), round(pitches[i])) for i in range(len(levels))]
    assert chime_windows and chime_windows[0] < 3 and chime_windows[-1] > len(levels) - 15, detail
    passes = _runs(message_windows)
    assert len(passes) == 3, (passes, detail)
    assert all(15 <= len(p) <= 22 for p in passes), passes  # 2 s each
    for before, after in zip(passes, passes[1:], strict=False):
        pause = range(before[-1] + 2, after[0] - 1)
        assert len(pause) >= 6 and all(levels[i] < 100 for i in pause), [detail[i] for i in pause]
    assert max(chime_windows[:20]) < passes[0][0] and min(chime_windows[-20:]) > passes[-1][-1], detail
    opening = [pitches[i] for i in range(0, 20, 4)]
    closing = [pitches[i] for i in range(len(levels) - 24, len(levels) - 6, 4)]
    assert opening[0] < opening[-1] and closing[0] > closing[-1], (opening, closing)


# ---------------------------------------------------------------------------- b. join, stop, stale

def test_b_a_late_comer_joins_a_stop_silences_all_within_a_second_and_one_after_never_plays_it(
        controller: Flask, fleet: Fleet, tmp_path: Path) -> None:
    fleet.provision(("an-1", "qd/an"), ("an-2", "qd/an"), ("an-3", "qd/an"))
    fleet.start("an-1")
    message = _upload_tone(controller, tmp_path, 10, MESSAGE_HZ, "qd/an", "Sạt lở đất")
    fleet.wait_online("an-1")
    _ready(controller, message)
    alert = _post(controller, "/api/v1/alerts", {"mode": "live", "areas": ["qd/an"], "repeat": 3, "gap_s": 1,
                                                 "content": {"kind": "bulletin", "bulletin_id": message}}, 202)["alert"]
    alert_id = alert["id"]
    wait_until(lambda: fleet.rx["an-1"].sidecars(alert_id), timeout=60, what=f"an-1 playing\n{fleet.logs()}")
    running = _get(controller, f"/api/v1/alerts/{alert_id}")
    assert _clusters(running)["an-2"] == ("offline", "offline"), running["status"]

    # an-2 connects while it plays: it joins where the alert stands (the retained alert state), once.
    time.sleep(2.0)
    fleet.start("an-2")
    joined = wait_until(lambda: (s := fleet.rx["an-2"].sidecars(alert_id)) and s[0], timeout=30,
                        what=f"an-2 to join the alert\n{fleet.logs()}")
    assert joined["tags"] == {"priority": "emergency", "mode": "live"}, joined
    status = _alert_when(controller, alert_id, lambda a: _clusters(a)["an-2"][0] == "playing"
                         and _clusters(a)["an-1"][0] == "playing", what="an-1 and an-2 playing in the API")
    assert _clusters(status)["an-3"] == ("offline", "offline"), status["status"]
    (ack,) = _events(controller, "an-2", alert_id, "command.ack")
    assert ack["action"] == "emergency" and ack["joined"] is True, ack
    (started,) = _events(controller, "an-2", alert_id, "playback.started")
    # Where the alert stood when it joined, by the controller's start of it (both clocks are this machine's).
    stood = joined["first_sample_ms"] - status["alert"]["started_ms"]
    assert started["mode"] == "live" and started["offset_ms"] > 2000, started
    assert abs(started["offset_ms"] - stood) < 1000, (started, stood)

    # Stop: every receiver's recording of it closes within a second of the call.
    before = time.time_ns() / 1e6
    stopped = _post(controller, f"/api/v1/alerts/{alert_id}/stop", {}, 200)
    after = time.time_ns() / 1e6
    assert stopped["alert"]["status"] == "stopped" and stopped["alert"]["end_reason"] == "stopped", stopped["alert"]
    for name in ("an-1", "an-2"):
        (played,) = wait_until(lambda name=name: (s := fleet.rx[name].sidecars(alert_id)) and s[0]["closed_ms"] and s,
                               timeout=10, what=f"{name} to stop\n{fleet.logs()}")
        late = played["closed_ms"] - before
        heard = played["closed_ms"] - played["first_sample_ms"]
        assert late < 1000, (f"{name}: the stop call began at {before:.0f} and returned at {after:.0f} (took "
                             f"{after - before:.0f} ms); its sink closed at {played['closed_ms']:.0f}, {late:.0f} ms "
                             f"after the call began; it had played {heard:.0f} ms", played)
    final = _alert_when(controller, alert_id, lambda a: all(c["state"] != "playing" for c in a["status"]["clusters"]),
                        what="both receivers' ends ingested")
    assert final["alert"]["status"] == "stopped", final["alert"]
    # What the receivers report: each ended it on the controller's word (the stop, or the cleared state).
    assert _clusters(final) == {"an-1": ("finished", "stopped_by_command"), "an-2": ("finished", "stopped_by_command"),
                                "an-3": ("offline", "offline")}, final["status"]
    for name in ("an-1", "an-2"):
        (finished,) = _events(controller, name, alert_id, "playback.finished")
        assert finished["end_reason"] == "stopped_by_command" and finished["mode"] == "live", finished

    # an-3 connects after the stop: nothing of the alert reaches it, nothing plays.
    fleet.start("an-3")
    fleet.wait_online("an-3")
    online_ms = now_ms()
    wait_until(lambda: _events(controller, "an-3", type_="conf.accepted"), timeout=20, what="an-3 took its conf")
    time.sleep(max(0.0, 5 - (now_ms() - online_ms) / 1000))
    assert alert_id not in fleet.rx["an-3"].recorded()
    reported = _events(controller, "an-3")
    assert not [e for e in reported if e.get("item_id") == alert_id or e["type"].startswith(("command.", "playback."))
                ], reported


# ---------------------------------------------------------------------------- c. drill and live told apart

def test_c_drill_and_live_are_told_apart_by_the_receivers_and_in_the_as_run_report(
        controller: Flask, fleet: Fleet, tmp_path: Path) -> None:
    fleet.add(("phu-1", "qd/phu"), ("phu-2", "qd/phu"))
    fleet.wait_online("phu-1", "phu-2")
    text = {"kind": "text", "text": "Diễn tập phòng chống bão số ba."}
    results = {}
    for mode in ("drill", "live"):  # the same text, the same options: only the mode differs
        alert = _post(controller, "/api/v1/alerts", {"mode": mode, "areas": ["qd/phu"], "repeat": 1,
                                                     "content": text}, 202)["alert"]
        results[mode] = _alert_when(controller, alert["id"], lambda a: a["alert"]["status"] == "ended"
                                    and all(c["state"] == "finished" for c in a["status"]["clusters"]), timeout=90,
                                    what=f"the {mode} alert played to its end\n{fleet.logs()}")["alert"]
        assert results[mode]["tts_engine"] == "espeak", results[mode]
    drill, live = results["drill"], results["live"]
    # The drill says so in words before and after its message: seconds longer than the live alert.
    assert drill["duration_ms"] - live["duration_ms"] > 4000, (drill["duration_ms"], live["duration_ms"])
    for name in ("phu-1", "phu-2"):
        rx = fleet.rx[name]
        for alert, mode in ((drill, "drill"), (live, "live")):
            (played,) = rx.sidecars(alert["id"])
            assert played["tags"] == {"priority": "emergency", "mode": mode}, (name, played)
            assert abs(Path(played["pcm"]).stat().st_size / SECOND_BYTES * 1000 - alert["duration_ms"]) < 400
            reported = _events(controller, name, alert["id"])
            assert [e["type"] for e in reported] == ["command.ack", "playback.started", "playback.finished"], reported
            assert reported[0]["action"] == {"drill": "drill", "live": "emergency"}[mode], reported[0]
            assert [e["mode"] for e in reported[1:]] == [mode, mode], reported

    # The as-run report names each as what it was, per receiver, in the API and the CSV.
    report = _get(controller, "/api/v1/reports/as-run")
    rows = {(r["occurrence_id"], r["rx_id"]): (r["broadcast"], r["outcome"]) for r in report["rows"]
            if r["occurrence_id"] in (drill["id"], live["id"])}
    assert rows == {(drill["id"], "phu-1"): ("drill", "full"), (drill["id"], "phu-2"): ("drill", "full"),
                    (live["id"], "phu-1"): ("emergency", "full"), (live["id"], "phu-2"): ("emergency", "full")}, rows
    occurrences = {o["occurrence_id"]: o for o in report["occurrences"]}
    assert (occurrences[drill["id"]]["broadcast"], occurrences[drill["id"]]["full"]) == ("drill", 2)
    assert (occurrences[live["id"]]["broadcast"], occurrences[live["id"]]["full"]) == ("emergency", 2)
    assert occurrences[drill["id"]]["title"] == occurrences[live["id"]]["title"] == "Diễn tập phòng chống bão số ba"
    csv_text = requests.get(controller.config["PUBLIC_URL"] + "/api/v1/reports/as-run", params={"format": "csv"},
                            auth=AUTH, timeout=10).content.decode("utf-8-sig")
    header, *lines = csv_text.strip().splitlines()
    assert header.split(",")[-1] == "broadcast", header
    kinds = sorted((line.split(",")[0], line.split(",")[-1]) for line in lines
                   if line.startswith((drill["id"], live["id"])))
    assert kinds == sorted([(drill["id"], "drill")] * 2 + [(live["id"], "emergency")] * 2), kinds


# ---------------------------------------------------------------------------- d. the live status

def test_d_the_api_reports_each_area_and_cluster_while_an_alert_runs(
        controller: Flask, fleet: Fleet, tmp_path: Path) -> None:
    fleet.provision(("phu-1", "qd/phu"), ("phu-2", "qd/phu"), ("an-1", "qd/an"), ("an-9", "qd/an"))
    fleet.start("phu-1", "phu-2", "an-1")  # an-9 is installed but never comes online
    message = _upload_tone(controller, tmp_path, 10, MESSAGE_HZ, "qd", "Cháy rừng")
    fleet.wait_online("phu-1", "phu-2", "an-1")
    _ready(controller, message)
    body = {"mode": "live", "areas": ["qd/phu", "qd/an"], "repeat": 1, "chime": False,
            "content": {"kind": "bulletin", "bulletin_id": message}}
    preview = _post(controller, "/api/v1/alerts/preview", body, 200)
    assert (preview["clusters"], preview["where"]) == (4, "xã Quảng Phú, xã Quảng An"), preview
    alert_id = _post(controller, "/api/v1/alerts", body, 202)["alert"]["id"]
    answer = _alert_when(controller, alert_id, lambda a: a["status"]["counts"]["playing"] == 3,
                         what=f"three clusters playing\n{fleet.logs()}")
    status = answer["status"]
    assert status["status"] == "running" and status["mode"] == "live" and status["total"] == 4, status
    nonzero = {k: v for k, v in status["counts"].items() if v}
    assert nonzero == {"playing": 3, "offline": 1}, status["counts"]
    per_area = {a["id"]: (a["name"], {k: v for k, v in a["counts"].items() if v}) for a in status["areas"]}
    assert per_area == {"qd/an": ("Quảng An", {"playing": 1, "offline": 1}),
                        "qd/phu": ("Quảng Phú", {"playing": 2})}, status["areas"]
    clusters = {c["id"]: (c["name"], c["area"], c["state"], c["reason"]) for c in status["clusters"]}
    assert clusters == {"phu-1": ("PHU-1", "qd/phu", "playing", None), "phu-2": ("PHU-2", "qd/phu", "playing", None),
                        "an-1": ("AN-1", "qd/an", "playing", None), "an-9": ("AN-9", "qd/an", "offline", "offline")}
    assert [a["id"] for a in _get(controller, "/api/v1/alerts", open="1")["alerts"]] == [alert_id]
    # Stopped: the three report how it ended; the one never online stays offline.
    _post(controller, f"/api/v1/alerts/{alert_id}/stop", {}, 200)
    final = _alert_when(controller, alert_id, lambda a: a["status"]["counts"]["finished"] == 3,
                        what="the three ends ingested")
    assert {k: v for k, v in final["status"]["counts"].items() if v} == {"finished": 3, "offline": 1}
    assert _clusters(final)["an-9"] == ("offline", "offline")
    assert {_clusters(final)[n] for n in ("phu-1", "phu-2", "an-1")} == {("finished", "stopped_by_command")}
    assert _get(controller, "/api/v1/alerts", open="1")["alerts"] == []
