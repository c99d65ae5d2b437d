"""Fixtures for the controller tests."""

from __future__ import annotations

import pytest

from controller import auth
from controller.db import session_scope
from controller.models import Bulletin, Media, Receiver, User


@pytest.fixture
def prog(district):
    """The district plus ready bulletins (10 min and 50 min), an approver, a manager and receivers."""
    with session_scope(district) as db:
        for n, minutes in (("a", 10), ("b", 50)):
            db.add(Media(sha256=n * 64, format="mp3", bytes=1000, duration_ms=minutes * 60_000, created_ms=0))
        db.flush()
        db.add(Bulletin(id=1, title="Tin 10 phút", area_id="qd/phu", status="ready", media_sha256="a" * 64,
                        created_ms=0))
        db.add(Bulletin(id=2, title="Tin 50 phút", area_id="qd", status="ready", media_sha256="b" * 64,
                        created_ms=0))
        db.add(Bulletin(id=3, title="Đang xử lý", area_id="qd/phu", status="processing", created_ms=0))
        db.add(User(username="appr-phu", password_hash=auth.hash_password("pw-appr-phu"), role="approver",
                    area_id="qd/phu", created_ms=0))
        db.add(User(username="man-qd", password_hash=auth.hash_password("pw-man-qd"), role="manager",
                    area_id="qd", created_ms=0))
        db.add(Receiver(id="phu-1", area_id="qd/phu", name="P1", token_hash=auth.token_hash("x1"), created_ms=0))
        db.add(Receiver(id="an-1", area_id="qd/an", name="A1", token_hash=auth.token_hash("x2"), created_ms=0))
    return district
