"""Administration: the area tree (create, rename, merge communes) and users with roles."""

from __future__ import annotations

import json
import re

from flask import jsonify
from sqlalchemy import select

from controller import auth
from controller.api import bp, check_area, json_body, require
from controller.db import get_db
from controller.errors import FORBIDDEN, ApiError
from controller.models import AREA_LEVELS, ROLES, Area, ProgrammeItem, Receiver, SessionTemplateRow, User
from controller.runtime import services
from controller.services import areas
from controller.services.programme import audit
from schedules.events import now_ms

_AREA_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}(/[a-z0-9][a-z0-9-]{0,40}){0,3}$")
_USERNAME = re.compile(r"^[A-Za-z0-9._-]{3,80}$")


def _area_json(a: Area) -> dict:
    return {"id": a.id, "name": a.name, "level": a.level, "parent": a.parent_id,
            "require_distinct_approver": a.require_distinct_approver, "alert_needs_confirm": a.alert_needs_confirm}


@bp.post("/areas")
@require("manager")
def create_area(principal):
    """Add an area under a parent the caller manages (the root only for administrators)."""
    data = json_body()
    db = get_db()
    area_id, name, level = str(data.get("id", "")), str(data.get("name", "")).strip(), str(data.get("level", ""))
    parent_id = data.get("parent")
    if not _AREA_ID.match(area_id):
        raise ApiError(400, "area.bad_id", "id must be a lower-case slug such as quang-dien/quang-phu",
                       "Mã địa bàn chỉ gồm chữ thường không dấu, số, gạch ngang (ví dụ quang-dien/quang-phu).")
    if not name or len(name) > 200:
        raise ApiError(400, "area.bad_name", "name is required (at most 200 characters)", "Cần nhập tên địa bàn.")
    if level not in AREA_LEVELS:
        raise ApiError(400, "area.bad_level", f"level must be one of {', '.join(AREA_LEVELS)}",
                       "Cấp địa bàn không hợp lệ.")
    if parent_id is None:
        if principal.area_id is not None:
            raise FORBIDDEN
    else:
        check_area(principal, str(parent_id))
    if db.get(Area, area_id) is not None:
        raise ApiError(409, "area.exists", f"area {area_id!r} exists", "Mã địa bàn đã tồn tại.")
    area = Area(id=area_id, name=name, level=level, parent_id=parent_id)
    db.add(area)
    audit(db, principal.id, "create_area", "area", area_id,
          {"id": area_id, "name": name, "level": level, "parent": area.parent_id})
    db.commit()
    return jsonify({"area": _area_json(area)}), 201


@bp.patch("/areas/<path:area_id>")
@require("manager")
def update_area(principal, area_id: str):
    """Rename an area or change whether its items need a second person to approve."""
    data = json_body()
    db = get_db()
    area = check_area(principal, area_id)
    changed: dict = {}  # what was accepted, for the audit log (never the raw body)
    if "name" in data:
        name = str(data["name"]).strip()
        if not name or len(name) > 200:
            raise ApiError(400, "area.bad_name", "name is required (at most 200 characters)", "Cần nhập tên địa bàn.")
        area.name = changed["name"] = name
    if "require_distinct_approver" in data:
        area.require_distinct_approver = changed["require_distinct_approver"] = \
            bool(data["require_distinct_approver"])
    if "alert_needs_confirm" in data:  # a live emergency here waits for a second person
        if not isinstance(data["alert_needs_confirm"], bool):
            raise ApiError(400, "area.bad_flag", "alert_needs_confirm must be true or false",
                           "Lựa chọn xác nhận hai người không hợp lệ.")
        area.alert_needs_confirm = changed["alert_needs_confirm"] = data["alert_needs_confirm"]
    audit(db, principal.id, "update_area", "area", area.id, changed)
    db.commit()
    return jsonify({"area": _area_json(area)})


@bp.post("/areas/<path:area_id>/merge")
@require("manager")
def merge_area(principal, area_id: str):
    """Merge this area into ``into`` (two communes become one): receivers, items and users move; no reinstall.

    Receivers get a new signed conf listing their new scopes; the manifests are rebuilt.
    """
    data = json_body()
    db = get_db()
    source = check_area(principal, area_id)
    target = check_area(principal, str(data.get("into", "")))
    if source.id == target.id or source.level != target.level:
        raise ApiError(422, "area.bad_merge", "merge two different areas of the same level",
                       "Chỉ gộp hai địa bàn khác nhau cùng cấp.")
    if db.scalars(select(Area).where(Area.parent_id == source.id)).first() is not None:
        raise ApiError(422, "area.has_children", "move or merge the areas under it first",
                       "Hãy gộp hoặc chuyển các địa bàn cấp dưới trước.")
    moved = [rx.id for rx in db.scalars(select(Receiver).where(Receiver.area_id == source.id))]
    for rx in db.scalars(select(Receiver).where(Receiver.area_id == source.id)):
        rx.area_id = target.id
    for item in db.scalars(select(ProgrammeItem)):
        if item.area_id == source.id:
            item.area_id = target.id
        if item.targets:
            targets = sorted({target.id if t == source.id else t for t in json.loads(item.targets)})
            item.targets = json.dumps(targets)
    for user in db.scalars(select(User).where(User.area_id == source.id)):
        user.area_id = target.id
    for row in db.scalars(select(SessionTemplateRow).where(SessionTemplateRow.area_id == source.id)):
        db.delete(row)
    db.flush()
    db.delete(source)
    audit(db, principal.id, "merge_area", "area", source.id, {"into": target.id, "receivers": moved})
    db.commit()
    svc = services()
    if svc is not None:
        for rx_id in moved:
            svc.dispatcher.publish_receiver(rx_id)
        svc.programme_changed()
    return jsonify({"area": _area_json(target), "moved_receivers": moved})


def _user_json(u: User, throttled: dict[str, int] | None = None) -> dict:
    """``locked_until_ms``: until when some address must wait before trying this account again (or null);
    ``throttled`` is :func:`auth.throttled_until` of a whole list, looked up once."""
    if throttled is None:
        throttled = auth.throttled_until(get_db(), [u.username])
    may_alert = ROLES.index(u.role) >= ROLES.index("manager") or (bool(u.may_alert) and u.role != "viewer")
    return {"id": u.id, "username": u.username, "role": u.role, "area": u.area_id, "active": u.active,
            "locked_until_ms": throttled.get(u.username), "may_alert": may_alert}


@bp.get("/users")
@require("manager")
def list_users(principal):
    """Users whose area lies in the caller's subtree."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    rows = [u for u in db.scalars(select(User).order_by(User.username))
            if (u.area_id in visible) or (u.area_id is None and principal.area_id is None)]
    throttled = auth.throttled_until(db, [u.username for u in rows])
    return jsonify({"users": [_user_json(u, throttled) for u in rows]})


def _check_grant(principal: auth.Principal, role: str, area_id: str | None) -> None:
    if role not in ROLES:
        raise ApiError(400, "user.bad_role", f"role must be one of {', '.join(ROLES)}", "Vai trò không hợp lệ.")
    if ROLES.index(role) > ROLES.index(principal.role):
        raise ApiError(403, "user.role_too_high", "you cannot grant a role above your own",
                       "Không thể cấp vai trò cao hơn vai trò của bạn.")
    if area_id is None:
        if principal.area_id is not None:
            raise FORBIDDEN
    else:
        check_area(principal, area_id)


@bp.post("/users")
@require("manager")
def create_user(principal):
    """Add a user with a role limited to an area the caller manages."""
    data = json_body()
    db = get_db()
    username, password = str(data.get("username", "")), str(data.get("password", ""))
    role, area_id = str(data.get("role", "operator")), data.get("area")
    if area_id is not None and not isinstance(area_id, str):
        raise ApiError(400, "user.bad_area", "area must be an area id or null", "Địa bàn không hợp lệ.")
    if not _USERNAME.match(username):
        raise ApiError(400, "user.bad_username", "username: 3-80 letters, digits, dot, dash or underscore",
                       "Tên đăng nhập 3-80 ký tự: chữ không dấu, số, dấu chấm, gạch.")
    if len(password) < 8:
        raise ApiError(400, "user.weak_password", "the password needs at least 8 characters",
                       "Mật khẩu cần ít nhất 8 ký tự.")
    _check_grant(principal, role, area_id)
    if db.scalars(select(User).where(User.username == username)).first() is not None:
        raise ApiError(409, "user.exists", "that username is taken", "Tên đăng nhập đã có người dùng.")
    user = User(username=username, password_hash=auth.hash_password(password), role=role, area_id=area_id,
                created_ms=now_ms())
    db.add(user)
    db.flush()
    audit(db, principal.id, "create_user", "user", user.id, {"username": username, "role": role, "area": area_id})
    db.commit()
    return jsonify({"user": _user_json(user)}), 201


def _managed_user(principal: auth.Principal, user_id: int) -> User:
    """A user in the caller's scope, or 404 ``user.not_found`` (unknown and out-of-scope alike)."""
    db = get_db()
    user = db.get(User, user_id)
    if user is None or (user.area_id is None and principal.area_id is not None) or \
            (user.area_id is not None and not principal.may_touch(db, user.area_id)):
        raise ApiError(404, "user.not_found", "no such user", "Không tìm thấy người dùng.")
    return user


def _may_manage(principal: auth.Principal, user: User) -> bool:
    """Only users of a strictly weaker role; administrators of everything (no area) manage everyone."""
    if principal.role == "admin" and principal.area_id is None:
        return True
    return ROLES.index(user.role) < ROLES.index(principal.role)


@bp.patch("/users/<int:user_id>")
@require("manager")
def update_user(principal, user_id: int):
    """Change a user's role, area, password or active flag: only users of a weaker role than the caller's
    (callers may change their own password, nothing else of theirs), never above the caller's own powers."""
    data = json_body()
    db = get_db()
    user = _managed_user(principal, user_id)
    if user.id == principal.id and "active" in data and not data["active"]:
        raise ApiError(422, "user.self_disable", "you cannot disable yourself", "Không thể tự khóa tài khoản.")
    self_password_only = user.id == principal.id and set(data) <= {"password"}
    if not _may_manage(principal, user) and not self_password_only:
        raise ApiError(403, "user.peer", "you may change only users of a weaker role than yours",
                       "Chỉ được thay đổi tài khoản có vai trò thấp hơn vai trò của bạn.")
    changed: dict = {}  # what was accepted, for the audit log (never the raw body, never the password)
    role = str(data.get("role", user.role))
    area_id = data["area"] if "area" in data else user.area_id
    if area_id is not None and not isinstance(area_id, str):
        raise ApiError(400, "user.bad_area", "area must be an area id or null", "Địa bàn không hợp lệ.")
    _check_grant(principal, role, area_id)
    if role != user.role:
        changed["role"] = role
    if area_id != user.area_id:
        changed["area"] = area_id
    user.role, user.area_id = role, area_id
    if "active" in data:
        user.active = changed["active"] = bool(data["active"])
    if "may_alert" in data:  # emergency broadcasts: a manager grants it to an operator or approver
        if not isinstance(data["may_alert"], bool):
            raise ApiError(400, "user.bad_flag", "may_alert must be true or false", "Lựa chọn quyền không hợp lệ.")
        if data["may_alert"] and not principal.may_alert:
            raise ApiError(403, "user.role_too_high", "you cannot grant a permission you do not hold",
                           "Không thể cấp quyền mà bạn không có.")
        user.may_alert = changed["may_alert"] = data["may_alert"]
    if "password" in data:
        if len(str(data["password"])) < 8:
            raise ApiError(400, "user.weak_password", "the password needs at least 8 characters",
                           "Mật khẩu cần ít nhất 8 ký tự.")
        user.password_hash = auth.hash_password(str(data["password"]))
        auth.clear_throttle(db, user.username)
        changed["password_changed"] = True
    audit(db, principal.id, "update_user", "user", user.id, changed)
    db.commit()
    return jsonify({"user": _user_json(user)})


@bp.post("/users/<int:user_id>/unlock")
@require("manager")
def unlock_user(principal, user_id: int):
    """Forget the failed logins counted against a user in the caller's scope, from every address."""
    db = get_db()
    user = _managed_user(principal, user_id)
    if not _may_manage(principal, user) and user.id != principal.id:
        raise ApiError(403, "user.peer", "you may change only users of a weaker role than yours",
                       "Chỉ được thay đổi tài khoản có vai trò thấp hơn vai trò của bạn.")
    cleared = auth.clear_throttle(db, user.username)
    audit(db, principal.id, "unlock_user", "user", user.id, {"cleared": cleared})
    db.commit()
    return jsonify({"user": _user_json(user), "cleared": cleared})
