"""Browser fixtures: Debian's Chromium driven by Playwright against a live controller.

`playwright install` cannot download its own browser here, so Chromium comes
from the system (`/usr/bin/chromium`, installed by .ci/run); without it these
tests are skipped with a message saying so.
"""

from __future__ import annotations

import subprocess

import pytest

from audio.ffmpeg import ffmpeg_exe

from helpers import CHROMIUM_ARGS, chromium_path
from web_support import ARTIFACTS


@pytest.fixture
def page(browser, request):
    """A fresh browser context and page; a screenshot is kept in test-artifacts/ when the test fails."""
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="vi-VN")
    pg = context.new_page()
    yield pg
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture
def mic_browser(playwright_session, tmp_path):
    """A Chromium whose microphone plays a WAV file (Chromium's fake capture device)."""
    voice = tmp_path / "voice.wav"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=330:sample_rate=48000:duration=6", "-ac", "1", str(voice)], check=True)
    b = playwright_session.chromium.launch(executable_path=chromium_path(), args=[
        *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={voice}"])
    yield b
    b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome on the test item (for the failure screenshot)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)

