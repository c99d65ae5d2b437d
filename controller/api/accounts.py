"""API tokens for automation: each carries the role and areas of the user who made it."""

from __future__ import annotations

from flask import jsonify
from sqlalchemy import select

from controller import auth
from controller.api import bp, json_body, require
from controller.db import get_db
from controller.errors import ApiError
from controller.models import ApiToken
from controller.services.programme import audit
from schedules.events import now_ms


@bp.post("/tokens")
@require("viewer")
def create_token(principal):
    """Make a token for the caller (``{"name": ...}``); the token is shown once."""
    name = str(json_body(optional=True).get("name", "")).strip()
    if not name or len(name) > 100:
        raise ApiError(400, "token.bad_name", "name is required (at most 100 characters)",
                       "Cần đặt tên cho mã truy cập (tối đa 100 ký tự).")
    db = get_db()
    token = auth.new_token()
    row = ApiToken(user_id=principal.id, name=name, token_hash=auth.token_hash(token), created_ms=now_ms())
    db.add(row)
    db.flush()
    audit(db, principal.id, "create_token", "api_token", row.id, {"name": name})
    db.commit()
    return jsonify({"token": {"id": row.id, "name": name, "secret": token}}), 201


@bp.get("/tokens")
@require("viewer")
def list_tokens(principal):
    """The caller's tokens (without secrets)."""
    rows = get_db().scalars(select(ApiToken).where(ApiToken.user_id == principal.id).order_by(ApiToken.id))
    return jsonify({"tokens": [{"id": r.id, "name": r.name, "created_ms": r.created_ms,
                                "last_used_ms": r.last_used_ms, "revoked": r.revoked} for r in rows]})


@bp.delete("/tokens/<int:token_id>")
@require("viewer")
def revoke_token(principal, token_id: int):
    """Revoke one of the caller's tokens."""
    db = get_db()
    row = db.get(ApiToken, token_id)
    if row is None or row.user_id != principal.id:
        raise ApiError(404, "token.not_found", "no such token", "Không tìm thấy mã truy cập.")
    row.revoked = True
    audit(db, principal.id, "revoke_token", "api_token", row.id)
    db.commit()
    return "", 204
