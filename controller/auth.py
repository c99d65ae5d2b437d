"""Who is asking, and may they: users, roles scoped to an area subtree, tokens, lock-out.

Passwords are hashed with argon2 (older werkzeug hashes are verified once and
upgraded). Browsers get a Flask-Login session that expires when idle; the API
takes HTTP Basic or a bearer API token, never cookies. Repeated wrong passwords
lock the account for a while, for the web and the API alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app, g, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import validate_csrf
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash
from wtforms import ValidationError

from controller.db import get_db
from controller.models import ROLES, ApiToken, Receiver, User
from controller.services import areas
from schedules.events import now_ms

_hasher = PasswordHasher()
login_manager = LoginManager()


class AccountLocked(Exception):
    """Too many wrong passwords: the account is locked until ``until_ms``."""

    def __init__(self, until_ms: int):
        super().__init__(f"account locked until {until_ms}")
        self.until_ms = until_ms


@dataclass(frozen=True)
class Principal(UserMixin):
    """An authenticated user as the request sees it."""

    id: int
    username: str
    role: str
    area_id: str | None
    session_tag: str = ""

    def get_id(self) -> str:
        """Flask-Login id; it changes with the password, so a new password ends old sessions."""
        return f"{self.id}:{self.session_tag}"

    def at_least(self, role: str) -> bool:
        """True when this user's role is ``role`` or stronger."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def may_touch(self, db: Session, area_id: str) -> bool:
        """True when ``area_id`` lies in this user's area subtree."""
        return areas.is_within(db, area_id, self.area_id)


def _principal(user: User) -> Principal:
    return Principal(user.id, user.username, user.role, user.area_id, user.password_hash[-12:])


def hash_password(password: str) -> str:
    """An argon2id hash."""
    return _hasher.hash(password)


def _verify(stored: str, password: str) -> bool:
    if stored.startswith("$argon2"):
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    return check_password_hash(stored, password)


# Compared against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))


def authenticate(db: Session, username: str, password: str) -> Principal | None:
    """The user with these credentials, or None; raises AccountLocked while locked out.

    Counts failures and locks the account after ``LOGIN_MAX_FAILURES`` of them
    for ``LOGIN_LOCK_S`` seconds. Commits what it changes.
    """
    user = db.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        _verify(_DUMMY_HASH, password)
        return None
    now = now_ms()
    if user.locked_until_ms and user.locked_until_ms > now:
        raise AccountLocked(user.locked_until_ms)
    if not _verify(user.password_hash, password):
        user.failed_logins = (user.failed_logins or 0) + 1
        if user.failed_logins >= int(current_app.config["LOGIN_MAX_FAILURES"]):
            user.locked_until_ms = now + int(current_app.config["LOGIN_LOCK_S"]) * 1000
            user.failed_logins = 0
        db.commit()
        return None
    if not user.password_hash.startswith("$argon2") or _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_logins, user.locked_until_ms = 0, None
    db.commit()
    return _principal(user)


def new_token() -> str:
    """A random bearer token (shown once; only its hash is stored)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """sha256 of a high-entropy token: enough, and constant-time lookups by value."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def api_principal() -> Principal | None:
    """The user named by the request's Basic credentials or API token, or the logged-in browser.

    A browser session counts only with its CSRF token in ``X-CSRFToken`` for
    anything but reads. Raises AccountLocked for Basic credentials of a locked account.
    """
    if "api_principal" in g:
        return g.api_principal
    principal = None
    auth = request.authorization
    db = get_db()
    if auth is not None and auth.type == "basic" and auth.username and auth.password is not None:
        principal = authenticate(db, auth.username, auth.password)
    elif auth is not None and auth.type == "bearer" and auth.token:
        row = db.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash(auth.token),
                                                ApiToken.revoked.is_(False))).first()
        user = db.get(User, row.user_id) if row else None
        if row is not None and user is not None and user.active:
            row.last_used_ms = now_ms()
            db.commit()
            principal = _principal(user)
    elif auth is None and current_user.is_authenticated:
        # The pages' own scripts: the session cookie, plus the CSRF token in a header for changes.
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            try:
                validate_csrf(request.headers.get("X-CSRFToken"))
            except ValidationError as exc:
                from controller.errors import ApiError

                raise ApiError(400, "auth.csrf", "missing or invalid CSRF token (X-CSRFToken)",
                               "Thiếu mã bảo vệ, hãy tải lại trang.") from exc
        principal = current_user
    g.api_principal = principal
    return principal


def web_principal() -> Principal | None:
    """The user logged in to this browser session."""
    return current_user if current_user.is_authenticated else None


def web_login(principal: Principal) -> None:
    """Start a browser session for ``principal``."""
    session.clear()
    login_user(principal)
    session.permanent = True
    session["last_seen_ms"] = now_ms()


def web_logout() -> None:
    """End the browser session."""
    logout_user()
    session.clear()


def receiver_from_bearer() -> Receiver | None:
    """The receiver whose token is in ``Authorization: Bearer``, or None."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    digest = token_hash(header[7:].strip())
    rx = get_db().scalars(select(Receiver).where(Receiver.token_hash == digest)).first()
    if rx is None or rx.retired_ms is not None or not hmac.compare_digest(rx.token_hash, digest):
        return None
    return rx


@login_manager.user_loader
def _load_user(user_id: str) -> Principal | None:
    uid, _, tag = user_id.partition(":")
    if not uid.isdigit():
        return None
    user = get_db().get(User, int(uid))
    if user is None or not user.active or user.password_hash[-12:] != tag:
        return None
    return _principal(user)


def _idle_timeout() -> None:
    """Log a browser out after ``SESSION_IDLE_S`` seconds without a request."""
    if not current_user.is_authenticated:
        return
    now = now_ms()
    last = session.get("last_seen_ms", now)
    if now - last > int(current_app.config["SESSION_IDLE_S"]) * 1000:
        web_logout()
        session["expired"] = True
        return
    session["last_seen_ms"] = now


def init_app(app: Flask) -> None:
    """Wire Flask-Login and the idle timeout."""
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    app.before_request(_idle_timeout)
