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
