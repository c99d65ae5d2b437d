"""JSON API under /api/v1: HTTP Basic, a bearer token, or the pages' session with its CSRF header.

One blueprint; its views live in one module per feature (bulletins, programme,
receivers), imported at the bottom of this file.

Browsers and cached Basic credentials: a 401 never carries ``WWW-Authenticate:
Basic``, so no browser is ever asked for (and then keeps sending) a password for
this API; API clients send their credentials preemptively. As a second guard a
request that changes something is refused (403 ``auth.cross_site``) when the
browser says it comes from another site (``Sec-Fetch-Site: cross-site`` or
``same-site``), or when it looks like a browser's (``Origin`` or ``Sec-Fetch-*``
headers) yet is neither JSON nor carries ``X-CSRFToken`` / ``X-Requested-With``:
an HTML form on another site can send neither. Clients without those browser
headers (curl, scripts) may also upload multipart without a custom header.

Bodies: at most ``MAX_JSON_BYTES`` (``MAX_UPLOAD_BYTES`` for the upload); a JSON
body is an object nested at most ``MAX_JSON_DEPTH`` deep with integers within
±2**53; ids in URLs are below 2**31. Anything else is a 4xx, never a 500.
"""

from __future__ import annotations

import json
from functools import wraps

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from audio.errors import AudioError
from controller import auth
from controller.db import get_db
from controller.errors import FORBIDDEN, UNAUTHORIZED, ApiError, error_response
from controller.models import Area, Bulletin, Receiver
from controller.openapi import OPENAPI
from controller.runtime import services
from controller.services import areas

bp = Blueprint("api", __name__, url_prefix="/api/v1")

UPLOAD_ENDPOINTS = frozenset({"api.upload_bulletin"})  # these take MAX_UPLOAD_BYTES; every other body is JSON
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_INT = 2**53  # what JavaScript holds exactly; epoch ms and every count fit
_MAX_ID = 2**31 - 1  # ids are 32-bit integer columns


class IdConverter(IntegerConverter):
    """``<int:...>`` with an upper bound: a larger id does not match the route (404) rather than overflow the
    database driver (SQLite raises OverflowError above 2**63; PostgreSQL columns are 32-bit)."""

    def __init__(self, map, fixed_digits=0, min=None, max=_MAX_ID, signed=False):  # noqa: A002 (werkzeug's names)
        super().__init__(map, fixed_digits, min, max, signed)


# Registered before any rule is bound (this runs first when the blueprint is registered, and the API is
# registered before the pages), so every <int:> route of the app has the bound.
bp.record_once(lambda state: state.app.url_map.converters.update(int=IdConverter))


def _too_large_error() -> ApiError:
    limit = int(current_app.config["MAX_JSON_BYTES"])
    return ApiError(413, "request.too_large", f"the request body exceeds {limit} bytes",
                    f"Dữ liệu gửi lên quá lớn (tối đa {limit // 1024} KB).")


def _out_of_range_error() -> ApiError:
    return ApiError(400, "request.out_of_range", "a number or id is out of range", "Có số hoặc mã vượt quá giới hạn.")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(int(text)) > _MAX_INT:
        raise _out_of_range_error()
    return int(text)


def _no_constant(name: str):
    raise _out_of_range_error()  # NaN, Infinity: not JSON


def _depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _refuse_cross_site() -> None:
    """Refuse a change a page on another site could have made the browser send (see the module docstring)."""
    refused = ApiError(403, "auth.cross_site", "cross-site request refused: send JSON, or the X-CSRFToken or "
                       "X-Requested-With header", "Yêu cầu từ trang khác bị từ chối.")
    site = request.headers.get("Sec-Fetch-Site", "").lower()
    if site in ("cross-site", "same-site"):
        raise refused
    if request.mimetype == "application/json" or "X-CSRFToken" in request.headers \
            or "X-Requested-With" in request.headers:
        return
    browser = "Origin" in request.headers or any(h.startswith("Sec-Fetch-") for h in request.headers.keys())
    if browser:
        raise refused


@bp.before_request
def _guard_request():
    """Cross-site changes, body size, JSON depth and numbers: checked before any view parses the body."""
    if request.method in _CHANGES:
        _refuse_cross_site()
    if request.endpoint in UPLOAD_ENDPOINTS:
        return
    limit = int(current_app.config["MAX_JSON_BYTES"])
    if request.content_length is not None and request.content_length > limit:
        raise _too_large_error()
    request.max_content_length = limit  # a chunked body without Content-Length stops there too
    if request.method in _CHANGES and request.is_json:
        raw = request.get_data(cache=True)
        if not raw:
            return
        try:
            data = json.loads(raw, parse_int=_bounded_int, parse_constant=_no_constant)
        except RecursionError as exc:
            raise ApiError(400, "request.too_deep", "the JSON is nested too deeply",
                           "Dữ liệu gửi lên không hợp lệ.") from exc
        except ValueError:
            return  # not JSON: each view answers that in its own words
        if _depth(data) > int(current_app.config["MAX_JSON_DEPTH"]):
            raise ApiError(400, "request.too_deep", "the JSON is nested too deeply", "Dữ liệu gửi lên không hợp lệ.")
        if not isinstance(data, dict):  # every endpoint takes an object; some views would call .get on a list
            raise ApiError(400, "request.not_json", "body must be a JSON object", "Dữ liệu gửi lên không hợp lệ.")


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.message_vi)


@bp.errorhandler(AudioError)
def _audio_error(exc: AudioError):
    status = 413 if exc.code == "upload.too_large" else 422
    return error_response(status, exc.code, exc.message, exc.message_vi)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc):
    if request.endpoint not in UPLOAD_ENDPOINTS:
        exc = _too_large_error()
        return error_response(exc.status, exc.code, exc.message, exc.message_vi)
    limit = current_app.config["MAX_UPLOAD_BYTES"]
    return error_response(413, "upload.too_large", f"the upload exceeds {limit} bytes",
                          f"Tệp lớn hơn giới hạn {limit // (1024 * 1024)} MB.")


@bp.errorhandler(DataError)
@bp.errorhandler(OverflowError)
def _out_of_range(_exc):
    get_db().rollback()  # PostgreSQL: the transaction is aborted after the failed statement
    exc = _out_of_range_error()
    return error_response(exc.status, exc.code, exc.message, exc.message_vi)


@bp.errorhandler(auth.LoginBusy)
def _busy(_exc: auth.LoginBusy):
    resp = error_response(503, "auth.busy", "too many logins at once; try again in a moment",
                          "Máy chủ đang bận, xin thử lại sau giây lát.")
    resp.headers["Retry-After"] = "1"
    return resp


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
                # No WWW-Authenticate: Basic, so a browser never prompts for and caches a password (module doc).
                return error_response(401, UNAUTHORIZED.code, UNAUTHORIZED.message, UNAUTHORIZED.message_vi)
            if not principal.at_least(role):
                raise FORBIDDEN
            return view(principal, *args, **kwargs)

        return inner

    return wrap


def json_body(*, optional: bool = False, code: str = "request.not_json",
              message: str = "body must be a JSON object") -> dict:
    """The request's JSON object; 400 ``code`` otherwise (an empty body is ``{}`` if ``optional``).

    The one reader of JSON bodies for every view: what it reads has passed :func:`_guard_request`
    (413 ``request.too_large``, 400 ``request.too_deep``, numbers in range)."""
    data = request.get_json(silent=True)
    if data is None and optional and not request.get_data():
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, code, message, "Dữ liệu gửi lên không hợp lệ.")
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


def bulletin_in_scope(principal: auth.Principal, bulletin_id: int) -> Bulletin:
    """The bulletin, or 404 ``bulletin.not_found`` when it is unknown or outside the caller's areas."""
    db = get_db()
    b = db.get(Bulletin, bulletin_id)
    if b is None or not principal.may_touch(db, b.area_id):
        raise ApiError(404, "bulletin.not_found", f"no bulletin {bulletin_id}", "Không tìm thấy bản tin.")
    return b


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



from controller.api import accounts, admin, alerts, bulletins, fleet, live, programme, receivers, relays  # noqa: E402,F401,I001  (registers the views)
from controller.api import status as _status  # noqa: E402,F401  (a local `status` elsewhere here: aliased)
