"""Phát khẩn cấp on a 390 px phone: an operator sends a drill to the commune in four taps after login, and
the live view shows the real receiver's answers as they come (server-sent events), then stops it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from helpers import wait_until
from web_support import ARTIFACTS, PHONE, login, operator_may_alert

pytestmark = pytest.mark.e2e


def test_an_operator_sends_a_drill_from_a_phone_in_four_taps(live_app, receiver, browser):
    _proc, sink_dir, log = receiver
    live_app.config["TTS_ENGINES"] = "espeak"  # no internet here: the offline voice, and the screen says so
    base = operator_may_alert(live_app, log)
    phone = browser.new_context(**PHONE)
    page = phone.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, base, "op-phu", "pw-op-phu")
        sos = page.locator("#sos")
        box = sos.bounding_box()
        assert box and box["height"] >= 44 and box["width"] >= 44 and box["x"] + box["width"] <= 390
        taps = 0
        sos.tap()
        taps += 1
        page.wait_for_url(re.compile(r"/alerts$"))
        page.locator("#mode-drill").tap()
        taps += 1
        # The commune is picked and the first prepared text chosen: nothing to type.
        assert page.locator('input[name="area"][value="qd/phu"]').is_checked()
        assert page.locator("#tts-warning").is_visible()  # the offline voice would read: said before sending
        page.locator("#review").tap()
        taps += 1
        count = page.locator("#confirm-count")
        count.wait_for()
        assert count.inner_text() == "Phát diễn tập tới 1 cụm loa ở xã Quảng Phú"
        assert "DIỄN TẬP" in page.locator("#send").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "alert-confirm-390.png"), full_page=True)
        # Listening first is there for who wants it (not one of the four taps): the message as it will be spoken.
        page.locator("#listen").tap()
        expect(page.locator("#listen-audio")).to_be_visible(timeout=60_000)
        assert page.locator("#listen-audio").get_attribute("src").startswith("blob:")
        page.locator("#send").tap()
        taps += 1
        assert taps == 4
        page.wait_for_url(re.compile(r"/alerts/al-[0-9a-f]+$"), timeout=15_000)
        assert "DIỄN TẬP" in page.locator("#mode-banner").inner_text()
        # The receiver's answers arrive without a reload.
        row = page.locator('#cluster-list li[data-rx="phu-1"]')
        expect(row).to_have_attribute("data-state", re.compile("^(acknowledged|playing)$"), timeout=90_000)
        expect(page.locator("#n-playing")).to_have_text("1", timeout=60_000)
        expect(row).to_have_attribute("data-state", "playing")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(ARTIFACTS / "alert-live-390.png"), full_page=True)
        # The running drill shows on every page, in the drill's colour.
        other = phone.new_page()
        other.goto(base + "/")
        assert "DIỄN TẬP đang phát" in other.locator(".alert-bar.drill").inner_text()
        other.close()
        page.locator("#stop").tap()
        expect(page.locator("#alert-status")).to_have_text("Đã dừng", timeout=15_000)
        # The receiver's last word (stopped by command) still arrives on the open view.
        expect(row).to_have_attribute("data-state", "finished", timeout=15_000)
        assert "đã dừng bằng lệnh" in row.inner_text()
        assert errors == []
    finally:
        phone.close()
    # What the speaker got: the drill, tagged as such in the sink.
    sidecars = wait_until(lambda: [p for p in sink_dir.glob("al-*.json")], timeout=20, what="the drill in the sink")
    assert '"mode": "drill"' in sidecars[0].read_text()

