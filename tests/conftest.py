"""Shared fixtures: a real Mosquitto on loopback, a migrated database, the Flask app.

The broker is ``LOAXA_TEST_MQTT_URL`` when set; otherwise a ``mosquitto``
binary (PATH or /usr/sbin) is started on a free port for the session. Tests
that need a broker fail with a clear message when neither exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from controller import create_app, db
from controller.broker import EmbeddedBroker, free_port, mosquitto_binary

from helpers import CHROMIUM_ARGS, chromium_path, clear_retained, make_config, pg_database, seed_district

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing():
    """Argon2 at its lowest cost in tests: every Basic-auth call verifies a password, which costs about
    0.1 s at the production cost (argon2-cffi's defaults, used by controller.auth outside tests)."""
    from argon2 import PasswordHasher

    from controller import auth

    with pytest.MonkeyPatch.context() as mp:
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        mp.setattr(auth, "_hasher", cheap)
        mp.setattr(auth, "_DUMMY_HASH", cheap.hash("not a password"))
        yield


def pytest_generate_tests(metafunc):
    """A module with ``ON_BOTH_DATABASES = True`` runs every test that uses ``app`` on SQLite and PostgreSQL."""
    if getattr(metafunc.module, "ON_BOTH_DATABASES", False) and "app" in metafunc.fixturenames:
        metafunc.parametrize("app", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                             indirect=True)


@pytest.fixture(scope="session")
def mqtt_broker_url(tmp_path_factory) -> str:
    """URL of a real MQTT broker for this test session."""
    url = os.environ.get("LOAXA_TEST_MQTT_URL")
    if url:
        yield url
        return
    if mosquitto_binary() is None:
        pytest.fail("no MQTT broker: install mosquitto (apt install mosquitto) or set LOAXA_TEST_MQTT_URL")
    broker = EmbeddedBroker(tmp_path_factory.mktemp("mosquitto"))
    try:
        broker.start()  # the same launcher the controller uses when no broker is configured
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
def mqtt_url(mqtt_broker_url) -> str:
    """The session broker with every retained ``loaxa/v1/#`` message cleared before the test."""
    clear_retained(mqtt_broker_url)
    return mqtt_broker_url


@pytest.fixture
def app(tmp_path, request):
    """A controller app on a migrated SQLite database (PostgreSQL when parametrized so); services not started."""
    from controller import create_app, db

    with ExitStack() as stack:
        extra = {}
        if getattr(request, "param", "sqlite") == "postgresql":
            extra["DATABASE_URL"] = stack.enter_context(pg_database())
        application = create_app(make_config(tmp_path, **extra))
        db.upgrade(application.config["DATABASE_URL"])
        yield application
        application.extensions["loaxa.services"].stop()
        # A connection still checked out is a leak (the streamed CSV had one: it went back to the pool
        # only when the garbage collector found it, which once happened inside a later test's ast.parse
        # after DROP DATABASE had killed it, and Python 3.11.7 raised a SystemError there).
        leaked = application.extensions["loaxa.engine"].pool.checkedout()
        application.extensions["loaxa.engine"].dispose()
        assert leaked == 0, f"{leaked} database connection(s) left checked out"


@pytest.fixture
def client(app):
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def district(app):
    """The app with a seeded province, district, two communes and users."""
    seed_district(app)
    return app


@pytest.fixture(scope="session")
def playwright_session():
    """Playwright's driver, once per session (its sync API cannot be started twice at a time)."""
    if chromium_path() is None:
        pytest.skip("no Chromium: apt install chromium (as .ci/run does) or set LOAXA_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_session):
    """One headless Chromium for the session."""
    b = playwright_session.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def live_app(tmp_path, mqtt_url):
    """A controller with its services, served over HTTP on a free port, with the test district seeded."""
    port = free_port()
    app = create_app(make_config(tmp_path, MQTT_URL=mqtt_url, HTTP_PORT=port, MQTT_CLIENT_ID=f"ctl-web-{port}"))
    db.upgrade(app.config["DATABASE_URL"])
    seed_district(app)
    svc = app.extensions["loaxa.services"]
    svc.start()
    # werkzeug's threaded server stops cleanly from another thread (waitress's close() races its loop).
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
def receiver(live_app, tmp_path, mqtt_url):
    """``phu-1`` in commune ``qd/phu``, provisioned with the controller's CLI and run as its own process.

    Yields ``(process, sink directory, log file)``; the file sink records what it plays.
    """
    cfg = tmp_path / "phu-1.toml"
    env = {**os.environ, "LOAXA_VAR_DIR": live_app.config["VAR_DIR"],
           "LOAXA_PUBLIC_URL": live_app.config["PUBLIC_URL"]}
    subprocess.run([str(BIN / "loaxa-controller"), "provision", "phu-1", "--area", "qd/phu", "--name", "Phú 1",
                    "--mqtt-url", mqtt_url, "--out", str(cfg), "--state-dir", str(tmp_path / "rx"),
                    "--sink", "file"], check=True, env=env, capture_output=True)
    live_app.extensions["loaxa.services"].dispatcher.publish_receiver("phu-1")
    log = open(tmp_path / "receiver.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "receiver", "run", "--config", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    yield proc, tmp_path / "rx" / "sink", tmp_path / "receiver.log"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
