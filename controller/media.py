"""Media serving: content-addressed files for receivers (bearer token) and logged-in staff."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, abort, current_app, send_file

from controller import auth

bp = Blueprint("media", __name__)
_NAME = re.compile(r"^[0-9a-f]{64}\.(mp3|opus)$")


@bp.get("/media/<name>")
def media(name: str):
    """One immutable media file; Range requests are honoured (resumable downloads)."""
    try:
        allowed = auth.receiver_from_bearer() or auth.web_principal() or auth.api_principal()
    except auth.AccountLocked:
        allowed = None
    if allowed is None:
        abort(401)
    if not _NAME.match(name):
        abort(404)
    path = Path(current_app.config["MEDIA_DIR"]) / name
    if not path.is_file():
        abort(404)
    resp = send_file(path, mimetype="audio/mpeg" if name.endswith(".mp3") else "audio/ogg",
                     conditional=True, etag=name.split(".")[0], max_age=365 * 24 * 3600)
    resp.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return resp
