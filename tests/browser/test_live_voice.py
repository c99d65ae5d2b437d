"""Live voice from Chromium's fake microphone to a real receiver's file sink, through Icecast 2.

The microphone plays a WAV of silence with a short 1 kHz click every 3 s. The test notes when the
browser posted its first 250 ms slice (so capture began 250 ms before), finds the clicks in what
the receiver wrote to its sink (the sidecar gives the wall-clock time of its first sample), and
reports the mouth-to-speaker delay of each click. A refused microphone creates nothing.
"""

from __future__ import annotations

import array
import json
import math
import re
import subprocess
import time

import pytest
from playwright.sync_api import expect

from audio.ffmpeg import ffmpeg_exe
from controller.db import session_scope
from controller.icecast import icecast_binary
from controller.models import Alert

from helpers import CHROMIUM_ARGS, chromium_path, wait_until
from web_support import ARTIFACTS, PHONE, login, operator_may_alert

pytestmark = pytest.mark.e2e

CLICK_EVERY_S = 3.0
RATE = 44100


def _clicks_wav(path, seconds: float = 12.0):
    """Silence with a 30 ms 1 kHz click at 3, 6, 9 s (Chromium loops the file)."""
    expr = f"if(lt(mod(t,{CLICK_EVERY_S}),0.03)*gte(t,1),0.9*sin(2*PI*1000*t),0)".replace(",", "\\,")
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"aevalsrc={expr}:s=48000:d={seconds}", "-ac", "1", str(path)], check=True)
    return path


def _click_times(pcm: bytes, rate: int = RATE) -> list[float]:
    """Seconds into the PCM where a click begins (10 ms windows well above the noise floor)."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    win = rate // 100
    found: list[float] = []
    for i in range(0, len(samples) - win, win):
        chunk = samples[i:i + win]
        rms = math.sqrt(sum(x * x for x in chunk) / win)
        if rms > 2000 and (not found or i / rate - found[-1] > 1.0):
            found.append(i / rate)
    return found


@pytest.fixture
def speaking_browser(playwright_session, tmp_path):
    wav = _clicks_wav(tmp_path / "clicks.wav")
    b = playwright_session.chromium.launch(executable_path=chromium_path(), args=[
        *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}"])
    yield b
    b.close()


@pytest.fixture
def icecast_live(live_app):
    """The live controller with its Icecast started, as `make run` does when icecast2 is installed."""
    if icecast_binary() is None:
        pytest.skip("icecast2 is not installed (apt install icecast2; .ci/run installs it)")
    svc = live_app.extensions["loaxa.services"]
    live_app.config["LIVE_ICECAST"] = "auto"
    svc.live.start()
    assert svc.live.available, svc.live.reason_unavailable
    return live_app


def test_live_voice_from_the_browser_reaches_the_receiver(icecast_live, receiver, speaking_browser):
    app = icecast_live
    _proc, sink_dir, log = receiver
    base = operator_may_alert(app, log)
    ctx = speaking_browser.new_context(**PHONE)
    page = ctx.new_page()
    first_slice: list[float] = []
    page.on("request", lambda r: first_slice.append(time.time()) if "/audio?seq=0" in r.url else None)
    try:
        login(page, base, "op-phu", "pw-op-phu")
        page.goto(base + "/alerts")
        page.locator("#mode-drill").tap()
        page.locator("#kind-live").check()
        page.locator("#review").tap()
        expect(page.locator("#confirm-count")).to_have_text("Phát diễn tập tới 1 cụm loa ở xã Quảng Phú")
        page.locator("#send").tap()
        expect(page.locator("#live-panel")).to_be_visible(timeout=15_000)
        expect(page.locator("#live-playing")).to_have_text("1", timeout=30_000)
        # Until three clicks reached the speaker (the sink's PCM grows as the receiver plays).
        wait_until(lambda: any(len(_click_times(p.read_bytes())) >= 3 for p in sink_dir.glob("al-*.pcm")),
                   timeout=30, interval=0.5, what="three clicks in the receiver's sink")
        page.screenshot(path=str(_artifacts() / "live-voice-390.png"), full_page=True)
        page.locator("#live-stop").tap()
        page.wait_for_url(re.compile(r"/alerts/al-[0-9a-f]+$"), timeout=15_000)
    finally:
        ctx.close()
    with session_scope(app) as db:
        alert = db.query(Alert).filter(Alert.content_kind == "live").one()
        assert alert.status == "stopped" and alert.mode == "drill"
        assert alert.stream_url.endswith(f"/live-{alert.id}.ogg")
    sidecar = wait_until(lambda: [p for p in sink_dir.glob(f"{alert.id}-*.json")
                                  if json.loads(p.read_text()).get("closed_ms")], timeout=20,
                         what="the live voice in the receiver's sink")[0]
    meta = json.loads(sidecar.read_text())
    assert meta["tags"]["mode"] == "drill"
    pcm = sidecar.with_suffix(".pcm").read_bytes()
    clicks = _click_times(pcm, meta["sample_rate"])
    assert len(clicks) >= 2, f"the clicks did not reach the speaker: {clicks}"
    assert first_slice, "the browser sent no audio"
    capture_start = first_slice[0] - 0.25  # MediaRecorder emits its first slice 250 ms after it starts
    delays = []
    for at in clicks:
        heard = meta["first_sample_ms"] / 1000 + at
        spoken = capture_start + CLICK_EVERY_S * math.floor((heard - capture_start) / CLICK_EVERY_S)
        delays.append(round(heard - spoken, 2))
    print(f"live voice mouth-to-speaker delays (s): {delays}")
    # Measured, not bounded here (bench/live_voice.py reports p50/p99): the clicks arrive, each once per period.
    assert all(0 <= d < CLICK_EVERY_S for d in delays), delays


def test_a_refused_microphone_creates_nothing(icecast_live, playwright_session):
    app = icecast_live
    from controller import auth
    from controller.models import Receiver

    with session_scope(app) as db:
        db.add(Receiver(id="phu-9", area_id="qd/phu", name="P9", token_hash=auth.token_hash("t9"), created_ms=0))
    b = playwright_session.chromium.launch(executable_path=chromium_path(), args=[*CHROMIUM_ARGS])
    try:
        ctx = b.new_context(**PHONE)
        ctx.clear_permissions()  # no fake UI: headless Chromium denies the microphone
        page = ctx.new_page()
        login(page, app.config["PUBLIC_URL"], "admin", "pw-admin")
        page.goto(app.config["PUBLIC_URL"] + "/alerts")
        page.locator("#mode-live").click()
        page.locator('input[name="area"][value="qd/phu"]').check()
        page.locator("#kind-live").check()
        page.locator("#review").click()
        expect(page.locator("#confirm-count")).to_be_visible()
        page.locator("#send").click()
        expect(page.locator("#confirm-error")).to_contain_text("micro", timeout=10_000)
        ctx.close()
    finally:
        b.close()
    with session_scope(app) as db:
        assert db.query(Alert).count() == 0


def _artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
