"""Browser fixtures: Debian's Chromium driven by Playwright against a live controller.

`playwright install` cannot download its own browser here, so Chromium comes
from the system (`/usr/bin/chromium`, installed by .ci/run); without it these
tests are skipped with a message saying so.
"""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from controller import create_app, db
from controller.broker import free_port

from helpers import make_config, seed_district
from web_support import ARTIFACTS


@pytest.fixture
def live_app(tmp_path, mqtt_url):
    """A controller with its services, served over HTTP on a free port, with the test district seeded."""
    port = free_port()
    app = create_app(make_config(tmp_path, MQTT_URL=mqtt_url, HTTP_PORT=port, MQTT_CLIENT_ID=f"ctl-web-{port}"))
    db.upgrade(app.config["DATABASE_URL"])
    seed_district(app)
    svc = app.extensions["loaxa.services"]
    svc.start()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app
    server.shutdown()
    server.server_close()
    thread.join(5)
    svc.stop()
    app.extensions["loaxa.engine"].dispose()


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome on the test item (for the failure screenshot)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)

