"""Accounts: argon2 hashes, lock-out, idle timeout, API tokens, and their refusals."""

from __future__ import annotations

import re

from click.testing import CliRunner
from werkzeug.security import generate_password_hash

from controller.cli import main
from controller.db import session_scope
from controller.models import User

from helpers import basic


def _csrf(client, path="/login"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def _without_tokens(html: str) -> str:
    """A page with its CSRF tokens (which change with every answer) blanked out."""
    return re.sub(r'(name="csrf[-_]token" (?:value|content)=)"[^"]+"', r"\1", html)


def _login(client, username, password):
    return client.post("/login", data={"username": username, "password": password, "csrf_token": _csrf(client)})


def test_passwords_are_argon2_and_old_hashes_upgrade_on_login(district, client):
    with session_scope(district) as db:
        admin = db.query(User).filter_by(username="admin").one()
        assert admin.password_hash.startswith("$argon2id$")
        admin.password_hash = generate_password_hash("pw-admin")  # as stored by an older release
    assert _login(client, "admin", "pw-admin").status_code == 302
    with session_scope(district) as db:
        assert db.query(User).filter_by(username="admin").one().password_hash.startswith("$argon2id$")


def test_repeated_failures_throttle_that_address_for_that_account_web_and_api(district, client, monkeypatch):
    """Five failures from one address hold that address back for that account (same answer as a wrong
    password); the owner elsewhere and other accounts are not affected. Replaces the per-account lock-out."""
    from controller import auth

    clock = [1_000_000_000_000]
    monkeypatch.setattr(auth, "now_ms", lambda: clock[0])
    for _ in range(4):
        assert _login(client, "op-phu", "wrong").status_code == 401
    assert client.get("/api/v1/areas", headers=basic("op-phu", "wrong")).status_code == 401  # the fifth
    wrong = _login(client, "op-phu", "wrong")
    held = _login(client, "op-phu", "pw-op-phu")  # right password, but this address must wait
    assert held.status_code == wrong.status_code == 401 and _without_tokens(held.text) == _without_tokens(wrong.text)
    api = client.get("/api/v1/areas", headers=basic("op-phu", "pw-op-phu"))
    assert api.status_code == 401 and api.json["error"]["code"] == "auth.required"
    assert _login(client, "op-an", "pw-op-an").status_code == 302  # others are not affected
    elsewhere = district.test_client()
    resp = elsewhere.post("/login", data={"username": "op-phu", "password": "pw-op-phu",
                                          "csrf_token": _csrf(elsewhere)}, environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert resp.status_code == 302  # the owner at another address
    clock[0] += 1000  # the wait after five failures: 1 s
    assert client.get("/api/v1/areas", headers=basic("op-phu", "pw-op-phu")).status_code == 200


def test_missing_csrf_token_is_refused(district, client):
    resp = client.post("/login", data={"username": "admin", "password": "pw-admin"})
    assert resp.status_code == 400
    assert client.get("/").status_code == 302  # still logged out


def test_idle_session_expires(district, client):
    district.config["SESSION_IDLE_S"] = 60
    assert _login(client, "admin", "pw-admin").status_code == 302
    assert client.get("/").status_code == 200
    with client.session_transaction() as s:
        s["last_seen_ms"] -= 61_000
    resp = client.get("/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert "hết hạn" in client.get("/login").text


def test_changed_password_ends_other_sessions(district, client):
    assert _login(client, "admin", "pw-admin").status_code == 302
    from controller import auth

    with session_scope(district) as db:
        db.query(User).filter_by(username="admin").one().password_hash = auth.hash_password("new-password-1")
    assert client.get("/").status_code == 302


def test_api_tokens_carry_the_user_scope_and_can_be_revoked(district, client, tmp_path, monkeypatch):
    made = client.post("/api/v1/tokens", json={"name": "tự động"}, headers=basic("op-phu", "pw-op-phu"))
    assert made.status_code == 201
    secret = made.json["token"]["secret"]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert [a["id"] for a in client.get("/api/v1/areas", headers=bearer).json["areas"]] == ["qd/phu"]
    assert client.get("/api/v1/receivers/none", headers=bearer).status_code == 404
    assert client.post("/api/v1/tokens", json={"name": ""}, headers=bearer).status_code == 400
    other = client.post("/api/v1/tokens", json={"name": "x"}, headers=basic("op-an", "pw-op-an")).json
    assert client.delete(f"/api/v1/tokens/{other['token']['id']}", headers=bearer).status_code == 404
    assert client.delete(f"/api/v1/tokens/{made.json['token']['id']}", headers=bearer).status_code == 204
    assert client.get("/api/v1/areas", headers=bearer).status_code == 401
    assert client.get("/api/v1/areas", headers={"Authorization": "Bearer not-a-token"}).status_code == 401

    monkeypatch.setenv("LOAXA_VAR_DIR", district.config["VAR_DIR"])
    out = CliRunner().invoke(main, ["create-token", "viewer", "báo cáo"], catch_exceptions=False)
    assert out.exit_code == 0
    cli_bearer = {"Authorization": f"Bearer {out.output.strip()}"}
    assert client.get("/api/v1/receivers", headers=cli_bearer).status_code == 200
    assert client.post("/api/v1/programme/items", json={}, headers=cli_bearer).status_code == 403  # a viewer
    assert CliRunner().invoke(main, ["create-token", "nobody", "x"]).exit_code != 0


def test_inactive_user_cannot_log_in(district, client):
    with session_scope(district) as db:
        db.query(User).filter_by(username="viewer").one().active = False
    assert _login(client, "viewer", "pw-viewer").status_code == 401
    assert client.get("/api/v1/areas", headers=basic("viewer", "pw-viewer")).status_code == 401


def test_pages_scripts_use_the_session_with_a_csrf_header(district, client):
    assert _login(client, "op-phu", "pw-op-phu").status_code == 302
    assert [a["id"] for a in client.get("/api/v1/areas").json["areas"]] == ["qd/phu"]  # reads need no token
    body = {"bulletin_id": 1, "session": "evening", "mode": "daily"}
    refused = client.post("/api/v1/programme/items", json=body)
    assert refused.status_code == 400 and refused.json["error"]["code"] == "auth.csrf"
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    passed = client.post("/api/v1/programme/items", json=body, headers={"X-CSRFToken": token})
    assert passed.status_code == 404  # past the CSRF check: bulletin 1 does not exist here
