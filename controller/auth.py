"""Who is asking, and may they: users, roles scoped to an area subtree, tokens, lock-out.

Passwords are hashed with argon2 (older werkzeug hashes are verified once and
upgraded). Browsers get a Flask-Login session that expires when idle; the API
takes HTTP Basic or a bearer API token (or the session plus its CSRF header).

Wrong passwords are throttled per (client address, account), in the database so
that every worker shares it: after ``LOGIN_MAX_FAILURES`` failures that address
waits 1 s for that account, then 2 s, 4 s ... up to ``LOGIN_LOCK_S``; and after
``LOGIN_MAX_FAILURES_PER_ADDRESS`` failures across accounts the address waits
for all of them. The owner logging in from elsewhere is not held up. Unknown
accounts, wrong passwords and throttled attempts get one and the same answer
after one argon2 verification each, so neither the answer nor its timing tells
which accounts exist. At most ``LOGIN_MAX_CONCURRENT_VERIFY`` verifications run
at a time in a process; a login that finds no free slot within
``LOGIN_VERIFY_WAIT_S`` raises :class:`LoginBusy` (503) instead of queueing.
``users.failed_logins`` and ``users.locked_until_ms`` are kept but unused
(migration 0008 cleared them).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app, g, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import validate_csrf
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash
from wtforms import ValidationError

from controller.db import get_db, rowcount
from controller.models import ROLES, ApiToken, LoginThrottle, Receiver, User
from controller.services import areas
from schedules.events import now_ms

_hasher = PasswordHasher()
login_manager = LoginManager()


class LoginBusy(Exception):
    """Every password-verification slot stayed taken for ``LOGIN_VERIFY_WAIT_S``: try again shortly."""


AccountLocked = LoginBusy  # the old name, still caught where a login may be refused (controller/media.py)


@dataclass(frozen=True)
class Principal(UserMixin):
    """An authenticated user as the request sees it."""

    id: int
    username: str
    role: str
    area_id: str | None
    session_tag: str = ""
    may_alert_granted: bool = False

    def get_id(self) -> str:
        """Flask-Login id; it changes with the password, so a new password ends old sessions."""
        return f"{self.id}:{self.session_tag}"

    def at_least(self, role: str) -> bool:
        """True when this user's role is ``role`` or stronger."""
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def may_alert(self) -> bool:
        """May send emergency broadcasts and drills (in their areas): managers and admins, or when granted."""
        return self.at_least("manager") or (self.may_alert_granted and self.at_least("operator"))

    def may_touch(self, db: Session, area_id: str) -> bool:
        """True when ``area_id`` lies in this user's area subtree."""
        return areas.is_within(db, area_id, self.area_id)


def _principal(user: User) -> Principal:
    return Principal(user.id, user.username, user.role, user.area_id, user.password_hash[-12:], bool(user.may_alert))


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


def authenticate(db: Session, username: str, password: str, address: str | None = None) -> Principal | None:
    """The user with these credentials, or None (unknown, wrong, inactive or throttled alike).

    ``address`` is the client's (default: :func:`client_address` of the request). Raises
    :class:`LoginBusy` when no verification slot frees up in time. Commits what it changes.
    """
    address = client_address() if address is None else address
    username = username[:80]
    now = now_ms()
    throttled = _throttled(db, address, username, now)
    user = None if throttled else db.scalars(select(User).where(User.username == username)).first()
    with _verification_slot():
        if user is None or not user.active:
            _verify(_DUMMY_HASH, password)  # the same work whatever the reason, so timing tells nothing
            ok = False
        else:
            ok = _verify(user.password_hash, password)
    if not ok or user is None:
        if not throttled:
            _record_failure(db, address, username, now)
        db.commit()
        return None
    if not user.password_hash.startswith("$argon2") or _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    db.execute(delete(LoginThrottle).where(LoginThrottle.kind == "account", LoginThrottle.address == address,
                                           LoginThrottle.username == username))
    db.commit()
    return _principal(user)


def client_address() -> str:
    """The client's address as the throttle counts it: IPv6 by /64, behind ``PROXY_HOPS`` proxies."""
    addr = request.remote_addr or ""
    hops = int(current_app.config.get("PROXY_HOPS") or 0)
    if hops > 0:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        if len(forwarded) >= hops:
            addr = forwarded[-hops]
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr[:64] or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _throttle_rows(address: str, username: str):
    return or_((LoginThrottle.kind == "account") & (LoginThrottle.address == address)
               & (LoginThrottle.username == username),
               (LoginThrottle.kind == "address") & (LoginThrottle.address == address) & (LoginThrottle.username == ""))


def _throttled(db: Session, address: str, username: str, now: int) -> bool:
    """True while this address must wait before trying this account (or any account)."""
    q = select(LoginThrottle.id).where(_throttle_rows(address, username), LoginThrottle.blocked_until_ms > now)
    return db.scalars(q.limit(1)).first() is not None


def _record_failure(db: Session, address: str, username: str, now: int) -> None:
    """Count one failure for (address, account) and for the address; set the wait when past the free tries."""
    cfg = current_app.config
    forget = now - int(cfg["LOGIN_FORGET_S"]) * 1000
    cap_s = int(cfg["LOGIN_LOCK_S"])
    free = {"account": int(cfg["LOGIN_MAX_FAILURES"]), "address": int(cfg["LOGIN_MAX_FAILURES_PER_ADDRESS"])}
    db.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_ms < forget))  # keeps the table small
    for kind, name in (("account", username), ("address", "")):
        where = (LoginThrottle.kind == kind, LoginThrottle.address == address, LoginThrottle.username == name)
        if db.scalars(select(LoginThrottle.id).where(*where)).first() is None:
            # Another worker may insert the same row at the same moment: let the unique key keep one.
            insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
            db.execute(insert(LoginThrottle).values(kind=kind, address=address, username=name, failures=0,
                                                    last_failure_ms=now).on_conflict_do_nothing())
        # An atomic increment, so failures counted by several workers at once are all counted.
        db.execute(update(LoginThrottle).where(*where)
                   .values(failures=LoginThrottle.failures + 1, last_failure_ms=now))
        failures = db.scalars(select(LoginThrottle.failures).where(*where)).one()
        if failures >= free[kind]:
            wait_s = min(2 ** min(failures - free[kind], 30), cap_s)
            db.execute(update(LoginThrottle).where(*where).values(blocked_until_ms=now + wait_s * 1000))


def clear_throttle(db: Session, username: str) -> int:
    """Forget every failed login counted against ``username`` (from any address); the caller commits."""
    result = db.execute(delete(LoginThrottle).where(LoginThrottle.kind == "account",
                                                    LoginThrottle.username == username[:80]))
    return rowcount(result)


def throttled_until(db: Session, usernames: list[str]) -> dict[str, int]:
    """For each of ``usernames`` that some address must wait before trying: the latest end of such a wait."""
    rows = db.execute(select(LoginThrottle.username, func.max(LoginThrottle.blocked_until_ms))
                      .where(LoginThrottle.kind == "account", LoginThrottle.username.in_(usernames),
                             LoginThrottle.blocked_until_ms > now_ms())
                      .group_by(LoginThrottle.username))
    return {name: until for name, until in rows if until is not None}  # not None: the WHERE compared it


@contextmanager
def _verification_slot() -> Iterator[None]:
    """Hold one of the process's argon2 slots; :class:`LoginBusy` when none frees up in time."""
    slots = current_app.extensions["loaxa.login_slots"]
    if not slots.acquire(timeout=max(0.0, float(current_app.config["LOGIN_VERIFY_WAIT_S"]))):
        raise LoginBusy()
    try:
        yield
    finally:
        slots.release()


_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f]")  # control characters and spaces: browsers drop some of them


def local_path(target: str | None) -> str | None:
    r"""``target`` when it is a path on this host (for ``next`` and ``back`` parameters), else None.

    Control characters and spaces are removed first (``/\t/evil.example`` would reach a browser as
    ``//evil.example``); then anything with a scheme or host, not starting with ``/``, starting with
    ``//``, or holding a backslash (browsers read ``/\host`` as ``//host``) is refused.
    """
    if not target:
        return None
    cleaned = _UNSAFE_CHARS.sub("", target)
    if not cleaned.startswith("/") or cleaned.startswith("//") or "\\" in cleaned:
        return None
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc:
        return None
    return cleaned


def new_token() -> str:
    """A random bearer token (shown once; only its hash is stored)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """sha256 of a high-entropy token: enough, and constant-time lookups by value."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def api_principal() -> Principal | None:
    """The user named by the request's Basic credentials or API token, or the logged-in browser.

    A browser session counts only with its CSRF token in ``X-CSRFToken`` for
    anything but reads. Raises LoginBusy when Basic credentials cannot be verified now.
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
    """Wire Flask-Login, the idle timeout and the process's password-verification slots."""
    app.extensions["loaxa.login_slots"] = threading.BoundedSemaphore(int(app.config["LOGIN_MAX_CONCURRENT_VERIFY"]))
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    app.before_request(_idle_timeout)
