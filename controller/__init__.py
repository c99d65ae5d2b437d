"""The loaxa controller: a Flask app factory and its services."""

from __future__ import annotations

import json
import logging
import os

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from controller import config as cfg
from controller import security

logger = logging.getLogger(__name__)
csrf = CSRFProtect()


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then LOAXA_CONFIG's TOML, then LOAXA_* env, then ``test_config``."""
    app = Flask(__name__)
    app.config.from_mapping(cfg.DEFAULTS)
    app.config.from_mapping(security.COOKIE_DEFAULTS)  # before the sources below, so they can override them
    if os.environ.get("LOAXA_CONFIG"):
        app.config.update(cfg.load_file(os.environ["LOAXA_CONFIG"]))
    app.config.from_prefixed_env("LOAXA")
    if test_config:
        app.config.update(test_config)
    cfg.finalize(app.config)
    security.init_app(app)  # cookie flags (Secure follows PUBLIC_URL) and the CSP and other headers

    from controller import api, auth, db, i18n, labels, media, pages, runtime

    db.init_app(app)
    auth.init_app(app)
    i18n.init_app(app)
    labels.init_app(app)
    csrf.init_app(app)
    csrf.exempt(api.bp)  # the API takes credentials in headers only, never cookies
    app.register_blueprint(api.bp)
    app.register_blueprint(media.bp)
    for page_bp in pages.BLUEPRINTS:  # login, overview, bulletins, programme, clusters, faults, reports, admin
        app.register_blueprint(page_bp)
    app.add_template_filter(lambda s: json.loads(s) if s else {}, "fromjson")
    runtime.init_app(app)
    return app
