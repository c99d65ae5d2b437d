"""Helpers for the browser tests (fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
def login(page, base: str, username: str, password: str) -> None:
    """Log in through the form, as a person would."""
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "locale": "vi-VN"}
"""A phone's browser context (390 px wide, touch), as commune staff hold it."""


def operator_may_alert(app, receiver_log, rx_id: str = "phu-1") -> str:
    """Grant ``op-phu`` the alert permission and wait for ``rx_id`` online; the controller's base URL."""
    from controller.db import session_scope
    from controller.models import Receiver, User

    from helpers import wait_until

    with session_scope(app) as db:
        db.query(User).filter_by(username="op-phu").one().may_alert = True

    def online() -> bool:
        with session_scope(app) as db:
            return bool(db.get(Receiver, rx_id).online)

    wait_until(online, timeout=30, what=f"{rx_id} online (log: {receiver_log})")
    return app.config["PUBLIC_URL"]
