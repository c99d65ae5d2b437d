"""Security headers on every kind of response, the CSP's sources, and the session cookie's flags."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest

from controller import create_app, db
from controller.security import content_security_policy, tile_source

from helpers import basic, make_config, seed_district

HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def _directives(resp) -> dict[str, list[str]]:
    csp = resp.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}


def _check(resp) -> None:
    for name, value in HEADERS.items():
        assert resp.headers.get(name) == value, (name, resp.request.path)
    d = _directives(resp)
    assert d["script-src"] == ["'self'"], "no inline scripts, no other hosts"
    assert "'unsafe-inline'" not in d["default-src"] and "'unsafe-eval'" not in " ".join(sum(d.values(), []))
    assert d["object-src"] == ["'none'"] and d["base-uri"] == ["'none'"] and d["frame-ancestors"] == ["'none'"]
    assert d["form-action"] == ["'self'"]


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(client):
    token = _csrf(client.get("/login").text)
    return client.post("/login", data={"username": "admin", "password": "pw-admin", "csrf_token": token})


@pytest.mark.parametrize("path, status", [
    ("/login", 200),  # a page
    ("/api/v1/openapi.json", 200),  # API JSON
    ("/api/v1/bulletins", 401),  # an API error, JSON
    ("/static/forms.js", 200),  # a static file
    ("/no-such-page", 404),  # an error page
    ("/media/" + "0" * 64 + ".mp3", 401),  # media
])
def test_every_kind_of_response_carries_the_headers(client, path, status):
    with client.get(path) as resp:  # closed: a static file is streamed from an open file
        assert resp.status_code == status
        _check(resp)


def test_logged_in_pages_api_answers_and_media_carry_the_headers(district, tmp_path):
    client = district.test_client()
    _login(client)
    _check(client.get("/"))
    _check(client.get("/bulletins"))
    resp = client.get("/api/v1/areas", headers=basic("admin", "pw-admin"))
    assert resp.status_code == 200 and resp.is_json
    _check(resp)
    media = tmp_path / "var" / "media" / ("a" * 64 + ".mp3")
    media.parent.mkdir(parents=True, exist_ok=True)
    media.write_bytes(b"ID3" + b"\0" * 100)
    with client.get("/media/" + "a" * 64 + ".mp3") as resp:
        assert resp.status_code == 200
        _check(resp)


def test_images_may_come_from_the_map_tile_host_only(client, app):
    d = _directives(client.get("/login"))
    assert d["img-src"] == ["'self'", "data:", "https://tile.openstreetmap.org"]  # the default MAP_TILE_URL
    app.config["MAP_TILE_URL"] = ""
    assert _directives(client.get("/login"))["img-src"] == ["'self'", "data:"]


@pytest.mark.parametrize("url, source", [
    ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
    ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "https://*.tile.example.org"),
    ("http://10.0.0.5:8081/tiles/{z}/{x}/{y}.png?key=k", "http://10.0.0.5:8081"),
    ("/tiles/{z}/{x}/{y}.png", None),  # served here: 'self' covers it
    ("", None),
    (None, None),
    ("https://tiles-{s}.example.org/{z}/{x}/{y}.png", "https://*.example.org"),
    ("https://a.{s}.example.org/{z}/{x}/{y}.png", None),  # a wildcard only as the leftmost label
])
def test_tile_source(url, source):
    assert tile_source(url) == source


def test_the_policy_allows_the_tts_preview_blob_and_inline_styles_only():
    d = dict(x.split(" ", 1) for x in content_security_policy({"MAP_TILE_URL": ""}).split("; "))
    assert d["media-src"] == "'self' blob:"
    assert d["style-src"] == "'self' 'unsafe-inline'"  # the templates' style attributes and <style> blocks


def _app(tmp_path, **extra):
    application = create_app(make_config(tmp_path, **extra))
    db.upgrade(application.config["DATABASE_URL"])
    seed_district(application)
    return application


def _close(application):
    application.extensions["loaxa.services"].stop()
    application.extensions["loaxa.engine"].dispose()


def _session_cookie(resp) -> dict[str, str]:
    header = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("session="))
    attrs = {}
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        attrs[key.lower()] = value
    return attrs


@pytest.mark.parametrize("public_url, secure", [("https://loa.example.vn", True), ("http://10.0.0.2:8080", False)])
def test_the_session_cookie_after_login(tmp_path, public_url, secure):
    application = _app(tmp_path, PUBLIC_URL=public_url)
    try:
        client = application.test_client()
        before = datetime.now(UTC).replace(microsecond=0)
        resp = _login(client)
        after = datetime.now(UTC)
        assert resp.status_code == 302
        attrs = _session_cookie(resp)
        assert "httponly" in attrs
        assert attrs["samesite"] == "Lax"
        assert ("secure" in attrs) is secure
        expires = parsedate_to_datetime(attrs["expires"])
        assert before + timedelta(hours=8) <= expires <= after + timedelta(hours=8)
        if "max-age" in attrs:
            assert abs(int(attrs["max-age"]) - 8 * 3600) <= 60
    finally:
        _close(application)


def test_an_explicit_cookie_setting_wins(tmp_path):
    application = _app(tmp_path, PUBLIC_URL="https://loa.example.vn", SESSION_COOKIE_SECURE=False,
                       SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=3600)
    try:
        assert application.config["SESSION_COOKIE_SECURE"] is False
        assert application.config["REMEMBER_COOKIE_SECURE"] is True
        assert application.config["PERMANENT_SESSION_LIFETIME"] == timedelta(hours=1)
        attrs = _session_cookie(_login(application.test_client()))
        assert attrs["samesite"] == "Strict" and "secure" not in attrs
    finally:
        _close(application)


def test_flask_defaults_no_longer_apply(app):
    """The old setdefault calls were no-ops: Flask had already defined these keys."""
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SECURE"] is False  # PUBLIC_URL defaults to http://127.0.0.1:<port>
    assert app.config["PERMANENT_SESSION_LIFETIME"] == timedelta(hours=8)
    assert app.config["REMEMBER_COOKIE_SAMESITE"] == "Lax" and app.config["REMEMBER_COOKIE_HTTPONLY"] is True
