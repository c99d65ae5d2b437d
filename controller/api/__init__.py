"""JSON API under /api/v1 (Basic auth; no cookies, hence no CSRF surface).

One blueprint; its views live in one module per feature (bulletins, programme,
receivers), imported at the bottom of this file.
"""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from audio.errors import AudioError
from controller import auth
from controller.db import get_db
from controller.errors import FORBIDDEN, UNAUTHORIZED, ApiError, error_response
from controller.models import Area, Receiver
from controller.openapi import OPENAPI
from controller.runtime import services
from controller.services import areas

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.message_vi)


@bp.errorhandler(AudioError)
def _audio_error(exc: AudioError):
    status = 413 if exc.code == "upload.too_large" else 422
    return error_response(status, exc.code, exc.message, exc.message_vi)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc):
    limit = current_app.config["MAX_UPLOAD_BYTES"]
    return error_response(413, "upload.too_large", f"the upload exceeds {limit} bytes",
                          f"Tệp lớn hơn giới hạn {limit // (1024 * 1024)} MB.")


@bp.errorhandler(auth.AccountLocked)
def _locked(exc: auth.AccountLocked):
    return error_response(429, "auth.locked", "too many wrong passwords; the account is locked for a while",
                          "Tài khoản tạm khóa do nhập sai mật khẩu nhiều lần.")


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return error_response(exc.code or 500, f"http.{exc.code}", exc.description or exc.name, exc.name)


def require(role: str):
    """Decorator: the caller must be authenticated with at least ``role``."""

    def wrap(view):
        @wraps(view)
        def inner(*args, **kwargs):
            principal = auth.api_principal()
            if principal is None:
                resp = error_response(401, UNAUTHORIZED.code, UNAUTHORIZED.message, UNAUTHORIZED.message_vi)
                resp.headers["WWW-Authenticate"] = 'Basic realm="loaxa"'
                return resp
            if not principal.at_least(role):
                raise FORBIDDEN
            return view(principal, *args, **kwargs)

        return inner

    return wrap


def json_body(*, optional: bool = False) -> dict:
    """The request's JSON object; 400 ``request.not_json`` otherwise (an empty body is ``{}`` if ``optional``)."""
    data = request.get_json(silent=True)
    if data is None and optional and not request.get_data():
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "request.not_json", "body must be a JSON object", "Dữ liệu gửi lên không hợp lệ.")
    return data


def area_or_404(area_id: str) -> Area:
    area = get_db().get(Area, area_id)
    if area is None:
        raise ApiError(404, "area.not_found", f"no area {area_id!r}", "Không tìm thấy địa bàn.")
    return area


def check_area(principal: auth.Principal, area_id: str) -> Area:
    area = area_or_404(area_id)
    if not principal.may_touch(get_db(), area.id):
        # Same answer as a missing area: do not reveal other communes' ids.
        raise ApiError(404, "area.not_found", f"no area {area_id!r}", "Không tìm thấy địa bàn.")
    return area


def receiver_in_scope(principal: auth.Principal, rx_id: str) -> Receiver:
    """The receiver, or 404 ``receiver.not_found`` when it is unknown or outside the caller's areas."""
    rx = get_db().get(Receiver, rx_id)
    if rx is None or not principal.may_touch(get_db(), rx.area_id):
        raise ApiError(404, "receiver.not_found", f"no receiver {rx_id!r}", "Không tìm thấy cụm loa.")
    return rx


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI description of this API."""
    return jsonify(OPENAPI)


@bp.get("/health")
def health():
    """Liveness: database reachable and whether the broker link is up."""
    get_db().execute(select(1))
    svc = services()
    return jsonify({"ok": True, "mqtt": bool(svc and svc.link and svc.link.connected.is_set())})


@bp.get("/areas")
@require("viewer")
def list_areas(principal):
    """The areas this user may see."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    rows = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    return jsonify({"areas": [{"id": a.id, "name": a.name, "level": a.level, "parent": a.parent_id} for a in rows]})



from controller.api import accounts, admin, bulletins, fleet, programme, receivers  # noqa: E402,F401  (registers the views)
from controller.api import status as _status  # noqa: E402,F401  (a local `status` elsewhere here: aliased)
