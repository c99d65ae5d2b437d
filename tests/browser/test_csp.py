"""Every page in Chromium under the Content-Security-Policy: no violation is reported, and what
inline scripts and handlers used to do (auto-submitting selects, the print button, the station's
date on the bulletins page) still works from the static scripts."""

from __future__ import annotations

import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from struct import pack

import pytest
import requests

from controller.db import session_scope
from controller.models import Receiver

from helpers import tone, wait_until
from web_support import login

# Runs before any page script (Playwright injects it outside the page's CSP): records every
# violation the page reports, and replaces window.print so a click can be counted.
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(
  e.violatedDirective + " blocked " + (e.blockedURI || "?") + " at " + e.sourceFile + ":" + e.lineNumber));
window.__printed = 0;
window.print = () => { window.__printed += 1; };
"""


def _png() -> bytes:
    """A 1x1 grey PNG (a map tile)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return pack(">I", len(data)) + kind + data + pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


@pytest.fixture
def tile_server():
    """A tile server on another port (another origin), like tile.openstreetmap.org for the map."""
    body = _png()

    class Tiles(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


# Waits are written as functions ("() => ..."): Playwright evaluates a bare expression string with
# eval() on every poll, which this CSP (no 'unsafe-eval') refuses after the first try.
@pytest.fixture
def watched(page):
    """The page, with a list that collects CSP violations from the console and from the DOM events."""
    page.add_init_script(WATCH)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    return page, console


def _violations(page, console) -> list[str]:
    return console + page.evaluate("window.__csp || []")


def _visit(page, console, url: str, status: int = 200) -> None:
    resp = page.goto(url)
    assert resp.status == status, url
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    page.wait_for_load_state("networkidle")
    assert _violations(page, console) == [], url


def _ready_bulletin(base: str, tmp_path) -> int:
    src = tone(tmp_path / "csp.mp3", 2)
    with open(src, "rb") as fh:
        bid = requests.post(base + "/api/v1/bulletins", auth=("op-phu", "pw-op-phu"), timeout=30,
                            data={"title": "Thông báo CSP", "area": "qd/phu"},
                            files={"file": ("t.mp3", fh, "audio/mpeg")}).json()["bulletin"]["id"]
    wait_until(lambda: requests.get(f"{base}/api/v1/bulletins/{bid}", auth=("op-phu", "pw-op-phu"), timeout=10)
               .json()["bulletin"]["status"] == "ready", what="transcode")
    return bid


def test_the_watch_sees_a_blocked_inline_script(live_app, watched):
    """The check itself: an inline script is refused, and the refusal is seen."""
    page, console = watched
    _visit(page, console, live_app.config["PUBLIC_URL"] + "/login")
    page.evaluate("document.body.append(Object.assign(document.createElement('script'),"
                  " {textContent: 'window.__ran = 1'}))")
    page.wait_for_function("() => window.__csp.length > 0")
    assert page.evaluate("window.__ran") is None
    assert any("script-src" in v for v in _violations(page, console))


def test_every_page_runs_without_a_csp_violation(live_app, watched, tile_server, tmp_path):
    page, console = watched
    base = live_app.config["PUBLIC_URL"]
    live_app.config["MAP_TILE_URL"] = tile_server + "/{z}/{x}/{y}.png"  # the CSP is built for each response
    with session_scope(live_app) as db:
        db.add_all([Receiver(id="phu-1", area_id="qd/phu", name="Phú 1", token_hash="a" * 64, created_ms=0,
                             lat=16.58, lon=107.50),
                    Receiver(id="an-1", area_id="qd/an", name="An 1", token_hash="b" * 64, created_ms=0,
                             lat=16.60, lon=107.45)])
    _ready_bulletin(base, tmp_path)
    _visit(page, console, base + "/login")
    _visit(page, console, base + "/no-such-page", status=404)
    login(page, base, "admin", "pw-admin")
    for path in ("/", "/bulletins", "/programme?area=qd/phu", "/programme?area=qd/phu&days=7", "/clusters",
                 "/clusters/phu-1", "/receivers/phu-1", "/faults", "/reports", "/reports/print", "/admin",
                 "/clusters/nobody", "/lang/en?next=/bulletins"):
        _visit(page, console, base + path, status=404 if path == "/clusters/nobody" else 200)
    # The map's tiles come from another origin, allowed by img-src: the map replaces the plot.
    page.goto(base + "/clusters")
    page.wait_for_function("() => document.getElementById('plot').style.display === 'none'")
    assert _violations(page, console) == []


def test_the_area_select_submits_its_form(live_app, watched):
    page, console = watched
    base = live_app.config["PUBLIC_URL"]
    login(page, base, "admin", "pw-admin")
    _visit(page, console, base + "/programme?area=qd/phu")
    with page.expect_navigation():
        page.select_option("select[name=area]", "qd/an")
    assert "area=qd%2Fan" in page.url
    assert page.locator("select[name=area]").input_value() == "qd/an"
    assert _violations(page, console) == []


def test_the_report_filter_submits_its_form(live_app, watched):
    page, console = watched
    base = live_app.config["PUBLIC_URL"]
    login(page, base, "admin", "pw-admin")
    _visit(page, console, base + "/reports")
    with page.expect_navigation():
        page.select_option("select[name=outcome]", "all")
    assert "outcome=all" in page.url
    assert _violations(page, console) == []


def test_the_print_button_prints(live_app, watched):
    page, console = watched
    base = live_app.config["PUBLIC_URL"]
    login(page, base, "admin", "pw-admin")
    _visit(page, console, base + "/reports/print")
    page.locator(".noprint button").click()
    assert page.evaluate("window.__printed") == 1
    assert _violations(page, console) == []


def test_the_bulletins_page_knows_the_station_date(live_app, watched, tmp_path):
    page, console = watched
    base = live_app.config["PUBLIC_URL"]
    bid = _ready_bulletin(base, tmp_path)
    login(page, base, "op-phu", "pw-op-phu")
    _visit(page, console, base + "/bulletins")
    today = page.evaluate("document.body.dataset.today")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", today or ""), today
    assert page.evaluate("document.body.dataset.tz") == live_app.config["TIMEZONE"]
    row = page.locator(f'#bulletins tr[data-bulletin="{bid}"]')
    row.wait_for()
    page.wait_for_function(f"() => !document.querySelector('#bulletins tr[data-bulletin=\"{bid}\"] button.schedule')"
                           ".disabled")
    assert row.locator(".day").input_value() >= today  # today, or the next day with a session to come
    assert _violations(page, console) == []
