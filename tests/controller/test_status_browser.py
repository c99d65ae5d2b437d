"""The cluster map and pages in headless Chromium at 360 px and 1366 px (Debian's chromium + Playwright).

Tiles that cannot load leave the SVG coordinate plot; tiles that load show the Leaflet map.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_status_pages import watched  # noqa: F401  (the fixture: receivers heard through telemetry)
from werkzeug.serving import make_server

from controller.broker import free_port

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def served(watched):  # noqa: F811
    """The seeded app over HTTP on a free port (no MQTT services: pages only)."""
    port = free_port()
    server = make_server("127.0.0.1", port, watched, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield watched, f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def chromium(browser):
    """The session's Chromium (tests/conftest.py): Playwright's sync API runs once per process."""
    return browser


def _login(page, base: str, user: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "pw-" + user)
    page.locator("form:has(input[name=password]) button").first.click()
    page.wait_for_load_state()


@pytest.mark.parametrize("width", [360, 1366])
def test_pages_fit_the_screen_and_the_plot_stands_in_for_tiles(served, chromium, width):
    app, base = served
    app.config["MAP_TILE_URL"] = "http://127.0.0.1:9/{z}/{x}/{y}.png"  # nothing listens there: tiles fail
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport={"width": width, "height": 800}, locale="vi-VN")
    page = context.new_page()
    try:
        _login(page, base, "man-qd")
        for path, name in (("/clusters", "clusters"), ("/clusters/phu-1", "cluster"), ("/faults", "faults"),
                           ("/reports", "reports")):
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow}px wider than a {width}px screen"
            page.screenshot(path=str(ARTIFACTS / f"status-{name}-{width}.png"), full_page=True)
            assert "Traceback" not in page.content()
        page.goto(base + "/clusters")
        page.wait_for_timeout(1500)
        assert page.locator("#plot svg circle[data-status]").count() == 3
        assert page.locator("#plot").is_visible() and not page.locator("#map").is_visible()
    finally:
        context.close()


def test_leaflet_map_replaces_the_plot_when_tiles_load(served, chromium):
    app, base = served
    app.config["MAP_TILE_URL"] = base + "/static/leaflet/images/layers.png?{z}/{x}/{y}"  # any PNG will do
    context = chromium.new_context(viewport={"width": 1366, "height": 900}, locale="vi-VN")
    page = context.new_page()
    try:
        _login(page, base, "man-qd")
        page.goto(base + "/clusters")
        page.wait_for_function("() => document.getElementById('plot').style.display === 'none'", timeout=10_000)
        assert page.locator("#map").is_visible() and page.locator("#map img.leaflet-tile-loaded").count() >= 1
        assert page.locator("#map canvas").count() >= 1  # the markers, drawn on a canvas (preferCanvas)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status-map-leaflet.png"), full_page=True)
    finally:
        context.close()
