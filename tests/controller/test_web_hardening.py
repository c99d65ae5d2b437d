"""Web and login hardening (issue "Trust and truth", section 2): body limits, cross-site refusals, login
throttling, open redirects, peer managers, and a broker password that never reaches the log."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from click.testing import CliRunner

from controller import auth
from controller.cli import main
from controller.db import session_scope
from controller.models import AuditEntry, Fault, LoginThrottle, ProgrammeItem, Receiver, User
from controller.services.programme import audit

from helpers import basic

ON_BOTH_DATABASES = True

ADMIN = basic("admin", "pw-admin")
OP_PHU = basic("op-phu", "pw-op-phu")
MANAGER = basic("man-qd", "pw-man-qd")
T0 = 1_900_000_000_000  # a fixed clock for the throttle (epoch ms)


def _csrf(client, path="/login"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def _login(client, username, password, next_=None, addr="127.0.0.1"):
    path = "/login" + (f"?next={next_}" if next_ is not None else "")
    return client.post(path, data={"username": username, "password": password, "csrf_token": _csrf(client)},
                       environ_base={"REMOTE_ADDR": addr})


def _without_tokens(html: str) -> str:
    return re.sub(r'(name="csrf[-_]token" (?:value|content)=)"[^"]+"', r"\1", html)


@pytest.fixture
def clock(monkeypatch):
    """The throttle's clock, moved by hand: ``clock[0]`` is now (epoch ms)."""
    now = [T0]
    monkeypatch.setattr(auth, "now_ms", lambda: now[0])
    return now


# ----------------------------------------------------------------- 1. bodies, nesting, numbers


def test_json_over_64_kb_is_413_before_any_view_parses_it(district, client, monkeypatch):
    import controller.api.admin as admin_api

    parsed = []
    monkeypatch.setattr(admin_api, "json_body", lambda **kw: parsed.append(1) or {})
    body = json.dumps({"id": "x", "name": "a" * 70_000, "level": "commune"})
    resp = client.post("/api/v1/areas", data=body, content_type="application/json", headers=ADMIN)
    assert resp.status_code == 413
    err = resp.json["error"]
    assert err["code"] == "request.too_large" and "bytes" in err["message"] and "quá lớn" in err["message_vi"]
    assert parsed == []
    # Without Content-Length (a chunked body) the limit holds while reading.
    resp = client.post("/api/v1/areas", input_stream=io.BytesIO(body.encode()), content_type="application/json",
                       headers=ADMIN, environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 413 and resp.json["error"]["code"] == "request.too_large"


def test_uploads_keep_their_own_limit(district, client):
    junk = {"title": "x", "area": "qd/phu", "file": (io.BytesIO(b"\x00" * 200_000), "x.mp3")}
    resp = client.post("/api/v1/bulletins", data=junk, headers=ADMIN, content_type="multipart/form-data")
    assert resp.status_code != 413 and resp.json["error"]["code"] != "request.too_large"


@pytest.mark.parametrize("body", ["[" * 100_000, "[" * 60_000, "[" * 40 + "]" * 40,
                                  '{"a":' * 40 + "1" + "}" * 40],
                         ids=["100000-open", "60000-open", "40-deep-array", "40-deep-object"])
def test_deeply_nested_json_is_a_4xx(district, client, body):
    with session_scope(district) as db:
        uid = db.query(User).filter_by(username="op-phu").one().id
    for method, path in (("POST", "/api/v1/areas"), ("PATCH", f"/api/v1/users/{uid}"),
                         ("POST", "/api/v1/programme/items"), ("POST", "/api/v1/tokens"),
                         ("PATCH", "/api/v1/areas/qd/phu")):
        resp = client.open(path, method=method, data=body, content_type="application/json", headers=ADMIN)
        assert 400 <= resp.status_code < 500, (path, resp.status_code)
        assert resp.json["error"]["code"] in ("request.too_large", "request.too_deep")


@pytest.mark.parametrize("method, path", [("POST", "/api/v1/tokens"), ("POST", "/api/v1/bulletins/tts"),
                                          ("POST", "/api/v1/programme/items"),
                                          ("PUT", "/api/v1/areas/qd/phu/sessions"),
                                          ("POST", "/api/v1/faults/1/ack")],
                         ids=["accounts", "bulletins", "programme", "programme-sessions", "status"])
def test_every_json_reader_refuses_oversized_and_deep_bodies(district, client, method, path):
    """Each API module that reads a JSON body (through json_body): 413 over the limit, 400 when too deep."""
    big = json.dumps({"name": "a" * 70_000, "title": "a", "note": "a"})
    resp = client.open(path, method=method, data=big, content_type="application/json", headers=ADMIN)
    assert resp.status_code == 413 and resp.json["error"]["code"] == "request.too_large", path
    deep = '{"a":' * 40 + "1" + "}" * 40
    resp = client.open(path, method=method, data=deep, content_type="application/json", headers=ADMIN)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "request.too_deep", path
    deepest = "[" * 100_000
    resp = client.open(path, method=method, data=deepest, content_type="application/json", headers=ADMIN)
    assert 400 <= resp.status_code < 500 and resp.json["error"]["code"] in ("request.too_large", "request.too_deep")


def _fill(rule: str, value: str) -> str:
    """``rule`` with ``value`` for every int argument (and a plausible value for the others)."""
    path = re.sub(r"<int:\w+>", value, rule)
    path = re.sub(r"<any\(([^,)]+)[^)]*\):\w+>", r"\1", path)
    return re.sub(r"<[^>]+>", "phu-1", path)


def test_out_of_range_ids_in_urls_are_404_never_500(district, client):
    """Every <int:> route of the app, with 2**80 and with -1."""
    rules = [r for r in district.url_map.iter_rules() if "<int:" in r.rule]
    assert len(rules) >= 5
    for rule in rules:
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            for value in (str(2**80), str(2**31), "-1"):
                resp = client.open(_fill(rule.rule, value), method=method, json={}, headers=ADMIN)
                assert resp.status_code in (404, 405), (method, rule.rule, value, resp.status_code)


def test_every_api_change_answers_odd_json_with_a_4xx(district, client):
    """Every POST/PUT/PATCH/DELETE of the API, with JSON that is not an object (4xx) or has odd types (< 500)."""
    odd = ["[]", '"x"', "1", "null", json.dumps({k: v for k in ("area", "name", "id", "title", "text", "session",
                                                                   "mode", "day", "date", "into", "parent", "role",
                                                                   "username", "password", "active", "volume")
                                                 for v in ([["x"]],)})]
    rules = [r for r in district.url_map.iter_rules() if r.rule.startswith("/api/")]
    for rule in rules:
        path = _fill(rule.rule.replace("<path:area_id>", "qd/phu"), "1")
        for method in rule.methods - {"GET", "HEAD", "OPTIONS"}:
            for body in odd:
                resp = client.open(path, method=method, data=body, content_type="application/json", headers=ADMIN)
                if body.startswith("{"):  # an object with odd types: refused or coerced, never a crash
                    assert resp.status_code < 500, (method, rule.rule, resp.status_code)
                else:
                    assert 400 <= resp.status_code < 500, (method, rule.rule, body, resp.status_code)


def test_out_of_range_numbers_in_bodies_are_4xx_never_500(prog, client):
    with session_scope(prog) as db:
        uid = db.query(User).filter_by(username="op-phu").one().id
    for value in (2**80, -(2**80), 2**40, -1, 2**31):
        body = {"bulletin_id": value, "area": "qd/phu", "session": "evening", "mode": "daily", "repeat": value,
                "gap_s": value, "into": value, "parent": value, "id": value, "name": value, "level": value}
        for method, path in (("POST", "/api/v1/programme/items"), ("POST", "/api/v1/areas"),
                             ("PATCH", f"/api/v1/users/{uid}"), ("POST", "/api/v1/areas/qd/phu/merge"),
                             ("POST", "/api/v1/users"), ("POST", "/api/v1/tokens"), ("PATCH", "/api/v1/areas/qd/an")):
            resp = client.open(path, method=method, json=body, headers=ADMIN)
            assert resp.status_code < 500, (method, path, value, resp.status_code, resp.get_data(as_text=True)[:200])
        big = client.post("/api/v1/programme/items", json=body, headers=ADMIN)
        if abs(value) > 2**53:
            assert big.status_code == 400 and big.json["error"]["code"] == "request.out_of_range"


def test_audit_records_validated_values_never_the_raw_body(district, client):
    resp = client.patch("/api/v1/areas/qd/phu", json={"name": " Quảng Phú mới ", "junk": "x" * 10_000,
                                                       "require_distinct_approver": "yes"}, headers=ADMIN)
    assert resp.status_code == 200
    with session_scope(district) as db:
        uid = db.query(User).filter_by(username="op-phu").one().id
    assert client.patch(f"/api/v1/users/{uid}", json={"password": "mat-khau-moi-1", "junk": 1},
                        headers=ADMIN).status_code == 200
    with session_scope(district) as db:
        lines = {a.action: json.loads(a.detail) for a in db.query(AuditEntry)}
        assert lines["update_area"] == {"name": "Quảng Phú mới", "require_distinct_approver": True}
        assert lines["update_user"] == {"password_changed": True}
        # audit() itself bounds what it keeps, whoever calls it.
        audit(db, None, "x" * 100, "y" * 100, "z" * 500, {"password": "hunter2", "text": "t" * 100_000})
        db.flush()
        row = db.query(AuditEntry).filter(AuditEntry.action.like("xxx%")).one()
        assert len(row.detail) <= 4000 and "hunter2" not in row.detail and json.loads(row.detail)["truncated"]
        assert len(row.action) == 40 and len(row.object_id) == 120


# ----------------------------------------------------------------- 2. browsers and cached Basic credentials


def _draft(client) -> int:
    body = {"bulletin_id": 1, "area": "qd/phu", "session": "evening", "mode": "daily"}
    resp = client.post("/api/v1/programme/items", json=body, headers=OP_PHU)
    assert resp.status_code == 201 and resp.json["item"]["status"] == "draft"
    return resp.json["item"]["id"]


def _status(app, item_id) -> str:
    with session_scope(app) as db:
        return db.get(ProgrammeItem, item_id).status


def test_cross_site_form_post_with_basic_credentials_is_refused(prog, client):
    item = _draft(client)
    path = f"/api/v1/programme/items/{item}/approve"
    evil = {"Origin": "https://evil.example", **MANAGER}
    attempts = [  # what an HTML form on another site makes a browser send (with the cached Basic credentials)
        dict(data={"reason": "x"}, headers={**evil, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}),
        dict(data={"reason": "x"}, headers={**evil, "Sec-Fetch-Site": "same-site"}),
        dict(data="reason=x", content_type="text/plain", headers=evil),  # an older browser: Origin, no Sec-Fetch
        dict(data={"reason": "x"}, content_type="multipart/form-data", headers=evil),
        dict(json={"reason": "x"}, headers={**evil, "Sec-Fetch-Site": "cross-site"}),
    ]
    for kw in attempts:
        resp = client.post(path, **kw)
        assert resp.status_code == 403 and resp.json["error"]["code"] == "auth.cross_site", kw
        assert _status(prog, item) == "draft"
    # API clients (no browser headers) and the pages' own scripts (JSON, or multipart with X-CSRFToken) pass.
    assert client.post(path, json={}, headers={**MANAGER, "Sec-Fetch-Site": "same-origin",
                                                "Origin": "http://localhost"}).status_code == 200
    assert _status(prog, item) == "approved"
    other = _draft(client)
    assert client.post(f"/api/v1/programme/items/{other}/reject", headers=MANAGER).status_code == 200


def test_pages_uploads_with_the_csrf_header_still_pass(district, client):
    junk = {"title": "x", "area": "qd/phu", "file": (io.BytesIO(b"not audio"), "x.mp3")}
    resp = client.post("/api/v1/bulletins", data=junk, content_type="multipart/form-data",
                       headers={**ADMIN, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin",
                                "X-Requested-With": "XMLHttpRequest"})
    assert resp.status_code != 403


def test_static_scripts_send_json_or_the_csrf_header():
    """The pages' scripts: every fetch/XHR that changes something carries X-CSRFToken (and JSON or FormData)."""
    from pathlib import Path

    import controller

    for js in (Path(controller.__file__).parent / "static").glob("*.js"):
        text = js.read_text()
        if re.search(r'method:\s*"(POST|PATCH|PUT|DELETE)"|method,|xhr\.open\("POST"', text):
            assert "X-CSRFToken" in text, js.name


def test_401_has_no_basic_challenge(district, client):
    for headers in ({}, basic("admin", "wrong"), {"Authorization": "Bearer nope"}):
        resp = client.get("/api/v1/areas", headers=headers)
        assert resp.status_code == 401 and "Basic" not in resp.headers.get("WWW-Authenticate", "")


# ----------------------------------------------------------------- 3. login throttling


def test_unknown_wrong_and_throttled_get_one_answer_after_one_verification(district, client, clock, monkeypatch):
    calls = []
    real = auth._verify
    monkeypatch.setattr(auth, "_verify", lambda stored, pw: calls.append(stored) or real(stored, pw))

    def api(user, pw):
        calls.clear()
        resp = client.get("/api/v1/areas", headers=basic(user, pw))
        assert len(calls) == 1  # one argon2 verification whatever the case
        return resp.status_code, resp.json

    unknown = api("nobody-here", "pw")
    wrong = api("op-phu", "wrong")
    for _ in range(4):
        api("op-phu", "wrong")
    throttled = api("op-phu", "pw-op-phu")  # the right password, but this address must wait
    assert unknown == wrong == throttled and unknown[0] == 401
    web = [_login(client, u, p) for u, p in (("nobody-here", "x"), ("op-an", "wrong"), ("op-phu", "pw-op-phu"))]
    assert {r.status_code for r in web} == {401}
    assert len({_without_tokens(r.text) for r in web}) == 1
    assert "Sai tên đăng nhập hoặc mật khẩu." in web[0].text


def test_waits_grow_and_the_owner_elsewhere_is_not_held_up(district, client, clock):
    def attempt(pw, addr="127.0.0.1"):
        return client.get("/api/v1/areas", headers=basic("op-phu", pw), environ_base={"REMOTE_ADDR": addr}).status_code

    for _ in range(5):
        assert attempt("wrong") == 401
    assert attempt("pw-op-phu") == 401  # waiting 1 s
    assert attempt("pw-op-phu", "10.1.2.3") == 200  # the owner at another address
    assert attempt("pw-op-phu", "2001:db8::1") == 200
    clock[0] += 1000
    assert attempt("wrong") == 401  # the sixth failure: 2 s now
    clock[0] += 1999
    assert attempt("pw-op-phu") == 401
    clock[0] += 1
    assert attempt("pw-op-phu") == 200  # and a success forgets this address's failures
    assert attempt("wrong") == 401 and attempt("pw-op-phu") == 200
    for _ in range(30):  # the wait never exceeds LOGIN_LOCK_S
        clock[0] += 3_600_000
        attempt("wrong")
    with session_scope(district) as db:
        row = db.query(LoginThrottle).filter_by(kind="account", username="op-phu").one()
        assert row.blocked_until_ms - row.last_failure_ms == 900_000


def test_ipv6_addresses_count_by_64(district, client, clock):
    for n in range(5):
        client.get("/api/v1/areas", headers=basic("op-phu", "wrong"), environ_base={"REMOTE_ADDR": f"2001:db8::{n}"})
    resp = client.get("/api/v1/areas", headers=OP_PHU, environ_base={"REMOTE_ADDR": "2001:db8::ff"})
    assert resp.status_code == 401


def test_one_address_trying_many_accounts_waits_for_all(district, client, clock):
    district.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 6
    for n in range(6):
        client.get("/api/v1/areas", headers=basic(f"guess-{n}", "x"))
    assert client.get("/api/v1/areas", headers=ADMIN).status_code == 401  # an account never tried from here
    assert client.get("/api/v1/areas", headers=ADMIN, environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200


def test_concurrent_verifications_are_bounded(district, client):
    district.config["LOGIN_VERIFY_WAIT_S"] = 0
    slots = district.extensions["loaxa.login_slots"]
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    assert taken == 4
    try:
        resp = client.get("/api/v1/areas", headers=ADMIN)
        assert resp.status_code == 503 and resp.json["error"]["code"] == "auth.busy"
        assert resp.headers["Retry-After"] == "1"
        assert _login(client, "admin", "pw-admin").status_code == 503
        assert client.get("/api/v1/areas", headers={"Authorization": "Bearer x"}).status_code == 401  # no argon2
    finally:
        for _ in range(taken):
            slots.release()
    assert client.get("/api/v1/areas", headers=ADMIN).status_code == 200


def _throttle(client, username):
    for _ in range(6):
        client.get("/api/v1/areas", headers=basic(username, "wrong"))


def test_a_manager_clears_the_throttle_of_a_weaker_user_in_scope(prog, client, clock):
    with session_scope(prog) as db:
        ids = {u.username: u.id for u in db.query(User)}
    made = client.post("/api/v1/users", json={"username": "man-phu", "password": "pw-man-phu", "role": "manager",
                                              "area": "qd/phu"}, headers=ADMIN)
    assert made.status_code == 201
    _throttle(client, "op-phu")
    assert client.get("/api/v1/areas", headers=OP_PHU).status_code == 401
    listed = {u["username"]: u for u in client.get("/api/v1/users", headers=MANAGER).json["users"]}
    assert listed["op-phu"]["locked_until_ms"] > T0
    resp = client.post(f"/api/v1/users/{ids['op-phu']}/unlock", headers=MANAGER)
    assert resp.status_code == 200 and resp.json["cleared"] == 1 and resp.json["user"]["locked_until_ms"] is None
    assert client.get("/api/v1/areas", headers=OP_PHU).status_code == 200
    assert client.post(f"/api/v1/users/{ids['admin']}/unlock", headers=MANAGER).status_code == 404  # out of scope
    peer = client.post(f"/api/v1/users/{made.json['user']['id']}/unlock", headers=MANAGER)
    assert peer.status_code == 403 and peer.json["error"]["code"] == "user.peer"
    assert client.post(f"/api/v1/users/{ids['op-an']}/unlock", headers=OP_PHU).status_code == 403
    with session_scope(prog) as db:
        assert db.query(AuditEntry).filter_by(action="unlock_user").count() == 1


def test_cli_unlock_shares_the_throttle_through_the_database(district, client, clock, monkeypatch):
    _throttle(client, "op-phu")
    assert client.get("/api/v1/areas", headers=OP_PHU).status_code == 401
    monkeypatch.setenv("LOAXA_VAR_DIR", district.config["VAR_DIR"])
    monkeypatch.setenv("LOAXA_DATABASE_URL", district.config["DATABASE_URL"])
    made = _keep_cli_apps(monkeypatch)
    try:
        out = CliRunner().invoke(main, ["unlock", "op-phu"], catch_exceptions=False)
        assert out.exit_code == 0 and "1 throttled" in out.output
        assert client.get("/api/v1/areas", headers=OP_PHU).status_code == 200
        assert CliRunner().invoke(main, ["unlock", "nobody"]).exit_code != 0
    finally:
        for app in made:  # the CLI's own app (another process in real use): close its connections
            app.extensions["loaxa.engine"].dispose()


def _keep_cli_apps(monkeypatch) -> list:
    from controller import cli

    made, real = [], cli._app
    monkeypatch.setattr(cli, "_app", lambda **kw: made.append(real(**kw)) or made[-1])
    return made


# ----------------------------------------------------------------- 4. open redirects

BAD_TARGETS = ["/%09/evil.example", "//evil.example", "/\\evil.example", "https://evil.example",
               "javascript:alert(1)", "/%0a/evil.example", "%20//evil.example", "\\\\evil.example",
               "/%5Cevil.example", "http:/evil.example"]


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_login_and_language_switch_never_redirect_off_site(district, client, target):
    resp = _login(client, "admin", "pw-admin", next_=target)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    resp = client.get(f"/lang/en?next={target}")
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_local_targets_are_kept(district, client):
    resp = _login(client, "admin", "pw-admin", next_="/programme%3Farea%3Dqd%2Fphu")
    assert resp.headers["Location"] == "/programme?area=qd/phu"
    assert client.get("/lang/vi?next=/clusters").headers["Location"] == "/clusters"


@pytest.mark.parametrize("target", ["/\t/evil.example", "//evil.example", "/\\evil.example", "https://evil.example",
                                    "javascript:alert(1)", " /x", "", None, "evil.example", "/a\\b"])
def test_local_path_refuses(target):
    assert auth.local_path(target) in (None, "/x")


def test_fault_acknowledgement_back_stays_on_site(district, client):
    with session_scope(district) as db:
        db.add(Receiver(id="phu-1", area_id="qd/phu", name="P1", token_hash=auth.token_hash("t"), created_ms=0))
        db.flush()
        fault = Fault(rx_id="phu-1", code="audio.no_output", raised_ms=0)
        db.add(fault)
        db.flush()
        fid = fault.id
    assert _login(client, "admin", "pw-admin").status_code == 302
    for target in ("/%09/evil.example", "//evil.example", "/\\evil.example", "https://evil.example"):
        resp = client.post(f"/faults/{fid}/ack", data={"back": target.replace("%09", "\t"),
                                                      "csrf_token": _csrf(client, "/")})
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/faults?"), resp.headers["Location"]


# ----------------------------------------------------------------- 5. managers and their peers


def test_a_manager_changes_only_weaker_users(prog, client):
    made = client.post("/api/v1/users", json={"username": "man-phu", "password": "pw-man-phu", "role": "manager",
                                              "area": "qd/phu"}, headers=ADMIN)
    peer = made.json["user"]["id"]
    with session_scope(prog) as db:
        before = db.get(User, peer).password_hash
        ids = {u.username: u.id for u in db.query(User)}
    for body in ({"password": "taken-over-1"}, {"role": "viewer"}, {"active": False}, {"area": "qd/an"}):
        resp = client.patch(f"/api/v1/users/{peer}", json=body, headers=MANAGER)
        assert resp.status_code == 403 and resp.json["error"]["code"] == "user.peer", body
    with session_scope(prog) as db:
        user = db.get(User, peer)
        assert (user.password_hash, user.role, user.active, user.area_id) == (before, "manager", True, "qd/phu")
    assert client.get("/api/v1/areas", headers=basic("man-phu", "pw-man-phu")).status_code == 200
    # The peer cannot touch the district manager either (stronger scope, same role): out of scope, 404.
    assert client.patch(f"/api/v1/users/{ids['man-qd']}", json={"password": "x" * 9},
                        headers=basic("man-phu", "pw-man-phu")).status_code == 404
    for name in ("op-phu", "appr-phu"):  # weaker roles in scope: allowed
        assert client.patch(f"/api/v1/users/{ids[name]}", json={"password": "new-pass-123"},
                            headers=MANAGER).status_code == 200
    assert client.patch(f"/api/v1/users/{ids['man-qd']}", json={"password": "pw-man-qd-2"},
                        headers=MANAGER).status_code == 200  # one's own password
    own_role = client.patch(f"/api/v1/users/{ids['man-qd']}", json={"role": "admin"},
                            headers=basic("man-qd", "pw-man-qd-2"))
    assert own_role.status_code == 403
    assert client.patch(f"/api/v1/users/{peer}", json={"password": "reset-by-admin"}, headers=ADMIN).status_code == 200


# ----------------------------------------------------------------- 6. the broker password stays out of the log


def test_run_does_not_print_the_broker_password(tmp_path, monkeypatch, caplog):
    import waitress

    from controller import runtime

    class FakeServer:
        def run(self):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(waitress, "create_server", lambda *a, **kw: FakeServer())
    monkeypatch.setattr(runtime.Services, "start", lambda self: None)
    monkeypatch.setenv("LOAXA_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LOAXA_MQTT_URL", "mqtt://ctl:s3cret-broker-pw@127.0.0.1:1")
    made = _keep_cli_apps(monkeypatch)
    with caplog.at_level(logging.DEBUG):
        out = CliRunner().invoke(main, ["run"], catch_exceptions=False)
    for app in made:
        app.extensions["loaxa.engine"].dispose()
    assert out.exit_code == 0
    assert "127.0.0.1:1" in out.output and "mqtt://***@127.0.0.1:1" in out.output
    assert "s3cret-broker-pw" not in out.output and "s3cret-broker-pw" not in caplog.text
