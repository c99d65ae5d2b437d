"""Administration API: the area tree, merging communes, users and roles — and every refusal."""

from __future__ import annotations

import json

from controller.db import session_scope
from controller.models import Area, ProgrammeItem, Publication, Receiver, User

from helpers import basic

ADMIN = basic("admin", "pw-admin")
MANAGER = basic("man-qd", "pw-man-qd")
OP_PHU = basic("op-phu", "pw-op-phu")

ON_BOTH_DATABASES = True


def test_area_tree_is_data(prog, client):
    made = client.post("/api/v1/areas", json={"id": "qd/moi", "name": "Xã Mới", "level": "commune", "parent": "qd"},
                       headers=MANAGER)
    assert made.status_code == 201
    assert client.post("/api/v1/areas", json={"id": "qd/moi", "name": "x", "level": "commune", "parent": "qd"},
                       headers=MANAGER).status_code == 409
    bad = [({"id": "Quảng Phú", "name": "x", "level": "commune", "parent": "qd"}, "area.bad_id"),
           ({"id": "qd/b", "name": "", "level": "commune", "parent": "qd"}, "area.bad_name"),
           ({"id": "qd/b", "name": "B", "level": "village", "parent": "qd"}, "area.bad_level")]
    for body, code in bad:
        assert client.post("/api/v1/areas", json=body, headers=MANAGER).json["error"]["code"] == code
    # A district manager cannot add a province, nor anything outside the district.
    assert client.post("/api/v1/areas", json={"id": "khac", "name": "Tỉnh khác", "level": "province"},
                       headers=MANAGER).status_code == 403
    assert client.post("/api/v1/areas", json={"id": "hue/x", "name": "X", "level": "district", "parent": "hue"},
                       headers=MANAGER).status_code == 404
    assert client.post("/api/v1/areas", json={"id": "qd/y", "name": "Y", "level": "commune", "parent": "qd"},
                       headers=OP_PHU).status_code == 403
    renamed = client.patch("/api/v1/areas/qd/phu", json={"name": "Xã Quảng Phú", "require_distinct_approver": True},
                           headers=MANAGER)
    assert renamed.json["area"]["name"] == "Xã Quảng Phú" and renamed.json["area"]["require_distinct_approver"]


def test_merging_two_communes_moves_receivers_items_and_users(prog, client):
    item = client.post("/api/v1/programme/items", headers=ADMIN,
                       json={"bulletin_id": 1, "area": "qd/an", "targets": ["qd/an", "qd/phu"], "session": "evening",
                             "mode": "daily"}).json["item"]
    svc = prog.extensions["loaxa.services"]
    svc.dispatcher.publish_everything()
    resp = client.post("/api/v1/areas/qd/an/merge", json={"into": "qd/phu"}, headers=MANAGER)
    assert resp.status_code == 200 and resp.json["moved_receivers"] == ["an-1"]
    with session_scope(prog) as db:
        assert db.get(Area, "qd/an") is None
        assert db.get(Receiver, "an-1").area_id == "qd/phu"
        moved = db.get(ProgrammeItem, item["id"])
        assert moved.area_id == "qd/phu" and json.loads(moved.targets) == ["qd/phu"]
        assert db.query(User).filter_by(username="op-an").one().area_id == "qd/phu"
    svc.dispatcher.publish_everything()
    with session_scope(prog) as db:
        conf = db.query(Publication).filter_by(kind="conf", scope="rx/an-1").order_by(Publication.version.desc())[0]
        assert conf.version == 2 and '"area/qd/phu"' in conf.payload  # the receiver now hears Quảng Phú
    refusals = [("/api/v1/areas/qd/phu/merge", {"into": "qd/phu"}, 422),
                ("/api/v1/areas/qd/merge", {"into": "qd/phu"}, 422),
                ("/api/v1/areas/qd/phu/merge", {"into": "nowhere"}, 404)]
    for path, body, status in refusals:
        assert client.post(path, json=body, headers=MANAGER).status_code == status
    assert client.post("/api/v1/areas/qd/phu/merge", json={"into": "qd"}, headers=OP_PHU).status_code == 403


def test_users_and_roles(prog, client):
    made = client.post("/api/v1/users", headers=MANAGER,
                       json={"username": "lan", "password": "mat-khau-1", "role": "approver", "area": "qd/phu"})
    assert made.status_code == 201
    assert client.get("/api/v1/areas", headers=basic("lan", "mat-khau-1")).status_code == 200
    cases = [({"username": "x", "password": "mat-khau-1"}, 400, "user.bad_username"),
             ({"username": "hoa", "password": "short"}, 400, "user.weak_password"),
             ({"username": "hoa", "password": "mat-khau-1", "role": "admin", "area": "qd"}, 403, "user.role_too_high"),
             ({"username": "hoa", "password": "mat-khau-1", "role": "operator", "area": None}, 403, "auth.forbidden"),
             ({"username": "hoa", "password": "mat-khau-1", "role": "operator", "area": "hue"}, 404, "area.not_found"),
             ({"username": "lan", "password": "mat-khau-1", "area": "qd/phu"}, 409, "user.exists")]
    for body, status, code in cases:
        resp = client.post("/api/v1/users", json=body, headers=MANAGER)
        assert (resp.status_code, resp.json["error"]["code"]) == (status, code), body
    names = [u["username"] for u in client.get("/api/v1/users", headers=MANAGER).json["users"]]
    assert "lan" in names and "admin" not in names and "viewer" not in names
    assert client.get("/api/v1/users", headers=OP_PHU).status_code == 403
    uid = made.json["user"]["id"]
    off = client.patch(f"/api/v1/users/{uid}", json={"active": False}, headers=MANAGER)
    assert off.json["user"]["active"] is False
    assert client.get("/api/v1/areas", headers=basic("lan", "mat-khau-1")).status_code == 401
    with session_scope(prog) as db:
        admin_id = db.query(User).filter_by(username="admin").one().id
        me = db.query(User).filter_by(username="man-qd").one().id
    assert client.patch(f"/api/v1/users/{admin_id}", json={"role": "viewer"}, headers=MANAGER).status_code == 404
    assert client.patch(f"/api/v1/users/{me}", json={"active": False}, headers=MANAGER).status_code == 422
