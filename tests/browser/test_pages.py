"""The pages in a real browser: log in, approve a draft on the programme page, look at the overview."""

from __future__ import annotations

import requests

from web_support import ARTIFACTS, login


def _draft(base: str) -> int:
    """A ready bulletin and a draft item for tonight's session, made through the API by an operator."""
    from helpers import tone

    src = tone(ARTIFACTS.parent / ".browser-tone.mp3", 2)
    try:
        with open(src, "rb") as fh:
            bid = requests.post(base + "/api/v1/bulletins", auth=("op-phu", "pw-op-phu"), timeout=30,
                                data={"title": "Thông báo họp dân", "area": "qd/phu"},
                                files={"file": ("t.mp3", fh, "audio/mpeg")}).json()["bulletin"]["id"]
    finally:
        src.unlink(missing_ok=True)
    from helpers import wait_until

    wait_until(lambda: requests.get(f"{base}/api/v1/bulletins/{bid}", auth=("op-phu", "pw-op-phu"), timeout=10)
               .json()["bulletin"]["status"] == "ready", what="transcode")
    item = requests.post(base + "/api/v1/programme/items", auth=("op-phu", "pw-op-phu"), timeout=10,
                         json={"bulletin_id": bid, "area": "qd/phu", "session": "evening", "mode": "daily"}).json()
    return item["item"]["id"]


def test_approve_a_draft_in_the_browser_and_see_it_on_the_timeline(live_app, page):
    base = live_app.config["PUBLIC_URL"]
    item_id = _draft(base)
    login(page, base, "admin", "pw-admin")
    page.goto(base + "/programme?area=qd/phu&days=7")
    row = page.locator(f'#drafts tr[data-item="{item_id}"]')
    assert "Thông báo họp dân" in row.inner_text()
    row.locator("text=Duyệt").click()
    page.wait_for_load_state()
    assert page.locator("#message").inner_text() == "Đã duyệt."
    assert page.locator(f'#drafts tr[data-item="{item_id}"]').count() == 0
    from datetime import datetime
    from zoneinfo import ZoneInfo

    # Today's evening on the day view, unless there is none today (Sunday) or it has already ended:
    # an item approved after its session cannot play in it, and the timeline does not pretend it will.
    now = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh"))
    sessions = requests.get(base + "/api/v1/areas/qd/phu/sessions", auth=("admin", "pw-admin"), timeout=10).json()
    evening = next(s for s in sessions["sessions"] if s["key"] == "evening")
    sunday, ended = now.weekday() == 6, now.strftime("%H:%M") >= evening["end"]
    assert page.locator("#timeline .it").count() == (0 if sunday or ended else 1)
    page.goto(base + "/programme?area=qd/phu&days=7")
    # Every evening of the week from today, Monday to Saturday, but tonight's once it has ended.
    assert page.locator("#timeline .it").count() == (5 if ended and not sunday else 6)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "programme-week.png"), full_page=True)


def test_overview_in_english_and_on_a_phone(live_app, browser):
    base = live_app.config["PUBLIC_URL"]
    phone = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    try:
        page = phone.new_page()
        login(page, base, "viewer", "pw-viewer")
        assert "Tổng quan" in page.content()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 362, f"the overview scrolls sideways on a phone ({width}px)"
        page.goto(base + "/lang/en?next=/")
        assert "Overview" in page.content() and "Loudspeaker clusters" in page.content()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "overview-phone-en.png"), full_page=True)
    finally:
        phone.close()


def test_wrong_password_shows_a_vietnamese_message(live_app, page):
    login(page, live_app.config["PUBLIC_URL"], "admin", "sai")
    assert page.locator(".err").inner_text() == "Sai tên đăng nhập hoặc mật khẩu."


def test_drag_to_reorder_items_within_a_session(live_app, page):
    base = live_app.config["PUBLIC_URL"]
    first, second = _draft(base), _draft(base)
    for item_id in (first, second):
        requests.post(f"{base}/api/v1/programme/items/{item_id}/approve", auth=("admin", "pw-admin"), timeout=10)
    requests.patch(f"{base}/api/v1/programme/items/{second}", auth=("admin", "pw-admin"), timeout=10,
                   json={"order": 1})
    login(page, base, "admin", "pw-admin")
    page.goto(base + "/programme?area=qd/phu")
    items = page.locator('ol.order[data-session="evening"] li')
    assert [items.nth(i).get_attribute("data-item") for i in range(2)] == [str(first), str(second)]
    items.nth(1).drag_to(items.nth(0))
    page.wait_for_load_state()
    page.wait_for_function(f"() => document.querySelector('ol.order li').dataset.item === '{second}'")
    orders = {i["id"]: i["order"] for i in requests.get(f"{base}/api/v1/programme/items", auth=("admin", "pw-admin"),
                                                          timeout=10).json()["items"]}
    assert orders[second] < orders[first]
