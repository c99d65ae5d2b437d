"""The administration page in Chromium: add a user; refusals for staff without the role."""

from __future__ import annotations

import requests

from web_support import login


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
