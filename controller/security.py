"""Browser-facing hardening: security headers on every response and the session cookie's flags.

The Content-Security-Policy forbids inline scripts and event handlers, so page behaviour
lives in ``controller/static/*.js`` and per-page data in ``data-`` attributes or
``<script type="application/json">`` blocks (data, never executed). Inline styles are
still allowed: the templates carry many ``style=`` attributes and ``<style>`` blocks.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, Response, current_app

logger = logging.getLogger(__name__)

# Flask defines these keys itself (SameSite unset, Secure off, a 31-day lifetime), so create_app
# applies ours before reading the TOML file, the environment and test_config, which may override them.
# None for Secure means "derive it from PUBLIC_URL" (see init_app).
COOKIE_DEFAULTS = {
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": None,
    "PERMANENT_SESSION_LIFETIME": timedelta(hours=8),
    "REMEMBER_COOKIE_HTTPONLY": True,  # Flask-Login's remember-me cookie (not issued today)
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_SECURE": None,
}


def tile_source(tile_url: str | None) -> str | None:
    """The CSP source for a Leaflet tile URL template: its origin, ``{s}`` subdomains as ``*``; None for none.

    A relative template (tiles served by this controller) needs nothing beyond ``'self'``.
    """
    if not tile_url:
        return None
    parts = urlsplit(tile_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = parts.netloc
    first, _, rest = host.partition(".")
    if "{" in first and rest:
        host = "*." + rest  # {s}.tile.example.org: a CSP wildcard stands only for the leftmost label
    if "{" in host or "}" in host:
        logger.warning("MAP_TILE_URL %s: cannot allow its host in the CSP; the map will show no tiles", tile_url)
        return None
    return f"{parts.scheme}://{host}"


def content_security_policy(config) -> str:
    """The CSP header value for this configuration."""
    img = ["'self'", "data:"]
    tiles = tile_source(config.get("MAP_TILE_URL"))
    if tiles:
        img.append(tiles)
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src " + " ".join(img),
        "media-src 'self' blob:",  # the text-to-speech preview plays a blob
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
    return "; ".join(directives)


def _headers(resp: Response) -> Response:
    """after_request: the security headers, unless a view set its own."""
    h = resp.headers
    h.setdefault("Content-Security-Policy", content_security_policy(current_app.config))
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    return resp


def init_app(app: Flask) -> None:
    """Settle the cookie flags (after config.finalize has filled PUBLIC_URL) and install the header hook."""
    https = str(app.config.get("PUBLIC_URL") or "").lower().startswith("https://")
    for key in ("SESSION_COOKIE_SECURE", "REMEMBER_COOKIE_SECURE"):
        if app.config.get(key) is None:
            app.config[key] = https
    lifetime = app.config["PERMANENT_SESSION_LIFETIME"]
    if not isinstance(lifetime, timedelta):  # seconds, e.g. from LOAXA_PERMANENT_SESSION_LIFETIME
        app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=int(lifetime))
    app.after_request(_headers)
