"""The administration page in Chromium: add a user; refusals for staff without the role."""

from __future__ import annotations

import tarfile
import tomllib

import requests

from web_support import ARTIFACTS, login

AUTH = ("admin", "pw-admin")


def test_manager_adds_a_user_and_operators_are_refused(live_app, page):
    base = live_app.config["PUBLIC_URL"]
    login(page, base, "admin", "pw-admin")
    page.goto(base + "/admin")
    assert page.locator('li[data-area="qd/phu"]').count() == 1
    page.wait_for_selector("#users tbody tr")
    form = page.locator("#new-user")
    form.locator("input[name=username]").fill("can-bo-moi")
    form.locator("input[name=password]").fill("mat-khau-123")
    form.locator("select[name=role]").select_option("operator")
    form.locator("select[name=area]").select_option("qd/an")
    form.locator("button").click()
    page.wait_for_selector('#users tbody tr:has-text("can-bo-moi")')
    assert requests.get(base + "/api/v1/areas", auth=("can-bo-moi", "mat-khau-123"), timeout=10).json()["areas"] \
        == [{"id": "qd/an", "level": "commune", "name": "Quảng An", "parent": "qd"}]
    form.locator("input[name=username]").fill("x")
    form.locator("input[name=password]").fill("mat-khau-123")
    form.locator("button").click()
    page.wait_for_selector("#admin-status.failed")
    assert "Tên đăng nhập" in page.locator("#admin-status").inner_text()


def test_operator_cannot_open_administration(live_app, page):
    base = live_app.config["PUBLIC_URL"]
    login(page, base, "op-phu", "pw-op-phu")
    response = page.goto(base + "/admin")
    assert response.status == 403
    assert "Quản trị" not in page.locator("header").inner_text()


def test_manager_provisions_a_receiver_edits_sessions_and_retires_it(live_app, page, tmp_path):
    base = live_app.config["PUBLIC_URL"]
    def accept(dialog):
        dialog.accept()

    page.on("dialog", accept)
    login(page, base, "admin", "pw-admin")
    page.goto(base + "/admin")

    # Register a box and download its install bundle in one go.
    form = page.locator("#new-receiver")
    form.locator("input[name=id]").fill("phu-moi")
    form.locator("input[name=name]").fill("Thôn Mới")
    form.locator("select[name=area]").select_option("qd/phu")
    form.locator("input[name=lat]").fill("16.5861")
    form.locator("input[name=lon]").fill("107.4920")
    form.locator("select[name=sink]").select_option("null")
    with page.expect_download() as download:
        form.locator("button").click()
    assert download.value.suggested_filename == "loaxa-phu-moi.tar.gz"
    saved = tmp_path / "bundle.tar.gz"
    download.value.save_as(saved)
    with tarfile.open(saved) as tar:
        conf = tomllib.loads(tar.extractfile("loaxa-phu-moi/receiver.toml").read().decode())
    assert conf["rx_id"] == "phu-moi" and conf["sink"] == "null"
    assert conf["mqtt_url"] == live_app.extensions["loaxa.services"].mqtt_url
    page.wait_for_selector('#receivers tr[data-rx="phu-moi"]')
    assert "Thôn Mới" in page.locator('#receivers tr[data-rx="phu-moi"]').inner_text()
    # Move it to the next commune (the prompt is answered by the dialog handler's accept: give it an answer).
    page.remove_listener("dialog", accept)
    page.once("dialog", lambda dialog: dialog.accept("qd/an"))
    page.locator('#receivers tr[data-rx="phu-moi"] button[data-act=move]').click()
    page.wait_for_function("() => document.querySelector('#receivers tr[data-rx=\"phu-moi\"]')"
                           ".textContent.includes('Quảng An')")
    page.on("dialog", accept)

    # The commune's sessions: move the morning, add a noon session on weekdays.
    page.locator("#sessions-area").select_option("qd/phu")
    page.wait_for_selector("#sessions-table tbody tr")
    assert page.locator("#sessions-table tbody tr").count() == 2
    page.locator("#sessions-table tbody tr").first.locator(".s-start").fill("05:00")
    page.click("#session-add")
    row = page.locator("#sessions-table tbody tr").nth(2)
    row.locator(".s-name").fill("Buổi trưa")
    row.locator(".s-start").fill("11:00")
    row.locator(".s-end").fill("11:30")
    row.locator('.s-day[value="5"]').uncheck()
    page.click("#sessions-save")
    page.wait_for_selector("#admin-status.ready")
    sessions = requests.get(base + "/api/v1/areas/qd/phu/sessions", auth=AUTH, timeout=10).json()
    assert sessions["source"] == "area"
    assert [(s["name"], s["start"], s["end"], s["weekdays"]) for s in sessions["sessions"]] == [
        ("Buổi sáng", "05:00", "06:30", [0, 1, 2, 3, 4, 5]), ("Buổi trưa", "11:00", "11:30", [0, 1, 2, 3, 4]),
        ("Buổi chiều", "17:00", "18:00", [0, 1, 2, 3, 4, 5])]
    # A session that ends before it starts: a Vietnamese message, and nothing changes.
    page.wait_for_selector("#sessions-table tbody tr >> nth=2")
    page.locator("#sessions-table tbody tr").nth(1).locator(".s-end").fill("10:00")
    page.click("#sessions-save")
    page.wait_for_selector("#admin-status.failed")
    assert "kết thúc" in page.locator("#admin-status").inner_text().lower()
    assert requests.get(base + "/api/v1/areas/qd/phu/sessions", auth=AUTH, timeout=10).json() == sessions

    # An extra session today (storm season), then retire the box.
    extra = page.locator("#extra-form")
    extra.locator("input[name=name]").fill("Tin bão")
    extra.locator("input[name=start]").fill("23:00")
    extra.locator("input[name=end]").fill("23:30")
    extra.locator("button").click()
    page.wait_for_selector('#extra-list li:has-text("Tin bão")')
    page.locator('#receivers tr[data-rx="phu-moi"] button[data-act=retire]').click()
    page.wait_for_selector('#receivers tr.retired[data-rx="phu-moi"]')
    assert requests.get(base + "/api/v1/receivers/phu-moi", auth=AUTH, timeout=10).json()["receiver"]["retired_ms"]
    page.set_viewport_size({"width": 360, "height": 800})
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-phone.png"), full_page=True)
