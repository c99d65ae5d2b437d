"""The bulletins page in Chromium: upload with a progress bar, record from a (fake) microphone, schedule."""

from __future__ import annotations

from datetime import date, timedelta

import requests

from helpers import tone, wait_until
from web_support import ARTIFACTS, login


def test_upload_shows_progress_then_the_bulletin_is_ready_and_scheduled(live_app, page, tmp_path):
    base = live_app.config["PUBLIC_URL"]
    src = tone(tmp_path / "thong-bao.mp3", 4)
    login(page, base, "op-phu", "pw-op-phu")
    page.goto(base + "/bulletins")
    form = page.locator("#upload-form")
    form.locator("input[name=title]").fill("Thông báo lịch tiêm chủng")
    form.locator("input[name=file]").set_input_files(str(src))
    form.locator("button[type=submit]").click()
    page.wait_for_function("() => document.querySelector('#upload-progress').value == 100", timeout=60_000)
    assert "Sẵn sàng" in page.locator("#upload-status").inner_text()
    row = page.locator("#bulletins tbody tr", has_text="Thông báo lịch tiêm chủng")
    row.wait_for()
    assert row.get_attribute("data-status") == "ready"
    # The page offers the next day with a session still to come, whatever the hour of the run:
    # tonight tomorrow, on a Saturday night Monday (a commune broadcasts Monday to Saturday).
    page.wait_for_function("() => !document.querySelector('#bulletins tbody tr button.schedule').disabled")
    day = date.fromisoformat(row.locator(".day").input_value())
    today = date.fromisoformat(page.evaluate("document.body.dataset.today"))
    assert today <= day <= today + timedelta(days=2) and day.weekday() != 6
    row.locator("button.schedule").click()
    page.wait_for_function("() => [...document.querySelectorAll('#bulletins .status')]"
                           ".some(td => td.textContent.includes('chờ duyệt'))")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bulletins.png"), full_page=True)
    # The operator sees the draft waiting, without buttons; an approver decides on the same list.
    page.reload()
    pending = page.locator(f'#bulletins tr[data-bulletin="{row.get_attribute("data-bulletin")}"] ul.pending li')
    pending.wait_for()
    assert "Chờ duyệt: Buổi" in pending.inner_text() and pending.locator("button").count() == 0  # by session name
    approver = page.context.browser.new_context(locale="vi-VN").new_page()
    login(approver, base, "admin", "pw-admin")
    approver.goto(base + "/bulletins")
    mine = approver.locator(f'#bulletins tr[data-bulletin="{row.get_attribute("data-bulletin")}"] ul.pending li')
    mine.locator("button.approve").click()
    approver.wait_for_function("() => document.querySelector('#bulletins ul.pending li')"
                               ".textContent.includes('Đã duyệt')")
    items = requests.get(base + "/api/v1/programme/items", auth=("admin", "pw-admin"), timeout=10).json()["items"]
    assert [i["status"] for i in items] == ["approved"]
    approver.context.close()


def test_bad_file_gets_a_vietnamese_message(live_app, page, tmp_path):
    base = live_app.config["PUBLIC_URL"]
    bad = tmp_path / "note.mp3"
    bad.write_text("đây không phải âm thanh\n" * 50)
    login(page, base, "op-phu", "pw-op-phu")
    page.goto(base + "/bulletins")
    page.locator("#upload-form input[name=title]").fill("Tệp hỏng")
    page.locator("#upload-form input[name=file]").set_input_files(str(bad))
    page.locator("#upload-form button[type=submit]").click()
    status = page.locator("#upload-status.failed")
    status.wait_for()
    assert "Tệp" in status.inner_text() or "âm thanh" in status.inner_text()


def test_record_from_the_microphone(live_app, mic_browser):
    base = live_app.config["PUBLIC_URL"]
    context = mic_browser.new_context(viewport={"width": 1366, "height": 900})
    context.grant_permissions(["microphone"], origin=base)
    page = context.new_page()
    try:
        login(page, base, "op-phu", "pw-op-phu")
        page.goto(base + "/bulletins")
        page.locator("#upload-form input[name=title]").fill("Ghi âm thông báo họp")
        page.click("#rec")
        page.wait_for_timeout(3000)  # speak for three seconds
        page.click("#rec")
        page.wait_for_function("() => document.querySelector('#upload-progress').value == 100", timeout=60_000)
        row = page.locator("#bulletins tbody tr", has_text="Ghi âm thông báo họp")
        row.wait_for()

        import requests

        data = requests.get(base + "/api/v1/bulletins", auth=("op-phu", "pw-op-phu"), timeout=10).json()
        rec = next(b for b in data["bulletins"] if b["title"] == "Ghi âm thông báo họp")
        assert rec["status"] == "ready" and 1500 < rec["media"]["duration_ms"] < 6000
    finally:
        context.close()


def test_text_to_speech_listen_before_saving(live_app, page):
    base = live_app.config["PUBLIC_URL"]
    login(page, base, "op-phu", "pw-op-phu")
    page.goto(base + "/bulletins")
    form = page.locator("#tts-form")
    form.locator("input[name=title]").fill("Thông báo cắt điện")
    form.locator("textarea").fill("UBND xã thông báo: ngày 25/11/2026 cắt điện từ 7h30 đến 11h.")
    page.click("#tts-preview")
    wait_until(lambda: "Sẵn sàng" in page.locator("#tts-status").inner_text()
               or "failed" in (page.locator("#tts-status").get_attribute("class") or ""), timeout=60,
               what="the preview")
    assert "Sẵn sàng" in page.locator("#tts-status").inner_text(), page.locator("#tts-status").inner_text()
    assert page.locator("#tts-audio").get_attribute("src").startswith("blob:")
