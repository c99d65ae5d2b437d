"""Who is asking, and may they: users, roles scoped to an area subtree, receiver tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import g, request, session
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from controller.db import get_db
from controller.models import ROLES, Receiver, User
from controller.services import areas


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the request sees it."""

    id: int
    username: str
    role: str
    area_id: str | None

    def at_least(self, role: str) -> bool:
        """True when this user's role is ``role`` or stronger."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def may_touch(self, db: Session, area_id: str) -> bool:
        """True when ``area_id`` lies in this user's area subtree."""
        return areas.is_within(db, area_id, self.area_id)


def hash_password(password: str) -> str:
    """A salted, slow hash (scrypt, from werkzeug)."""
    return generate_password_hash(password)


# Compared against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(8))


def authenticate(db: Session, username: str, password: str) -> Principal | None:
    """The user with these credentials, or None."""
    user = db.scalars(select(User).where(User.username == username)).first()
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    return Principal(user.id, user.username, user.role, user.area_id)


def new_token() -> str:
    """A random bearer token (shown once; only its hash is stored)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """sha256 of a high-entropy token: enough, and constant-time lookups by value."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def api_principal() -> Principal | None:
    """The user named by the request's Basic credentials (the API does not use cookies)."""
    if "api_principal" in g:
        return g.api_principal
    principal = None
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username and auth.password is not None:
        principal = authenticate(get_db(), auth.username, auth.password)
    g.api_principal = principal
    return principal


def web_principal() -> Principal | None:
    """The user logged in to this browser session."""
    uid = session.get("uid")
    if uid is None:
        return None
    user = get_db().get(User, uid)
    if user is None or session.get("pw") != user.password_hash[-16:]:
        return None
    return Principal(user.id, user.username, user.role, user.area_id)


def receiver_from_bearer() -> Receiver | None:
    """The receiver whose token is in ``Authorization: Bearer``, or None."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    digest = token_hash(header[7:].strip())
    rx = get_db().scalars(select(Receiver).where(Receiver.token_hash == digest)).first()
    if rx is None or not hmac.compare_digest(rx.token_hash, digest):
        return None
    return rx
