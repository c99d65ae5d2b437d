"""Scheduling through the API: validation, scope, and the manifest it produces."""

from __future__ import annotations

import io

from schedules.events import now_ms

from helpers import basic, tone, wait_until

ADMIN = basic("admin", "pw-admin")

ON_BOTH_DATABASES = True


def _ready_bulletin(client, tmp_path, headers=ADMIN, area="qd/phu") -> int:
    data = tone(tmp_path / "b.mp3", 2).read_bytes()
    resp = client.post("/api/v1/bulletins", headers=headers, content_type="multipart/form-data",
                       data={"title": "Lịch tiêm", "area": area, "file": (io.BytesIO(data), "b.mp3")})
    bid = resp.json["bulletin"]["id"]
    wait_until(lambda: client.get(f"/api/v1/bulletins/{bid}", headers=headers).json["bulletin"]["status"] == "ready")
    return bid


def test_schedule_validation(district, client, tmp_path):
    bid = _ready_bulletin(client, tmp_path)
    post = lambda body, h=ADMIN: client.post("/api/v1/programme/items", json=body, headers=h)  # noqa: E731
    assert post({"bulletin_id": bid, "start": "tomorrow"}).json["error"]["code"] == "schedule.bad_time"
    assert post({"bulletin_id": bid, "start_ms": now_ms() - 60_000}).json["error"]["code"] == "schedule.in_past"
    assert post({"bulletin_id": bid, "start_ms": now_ms() + 60_000, "priority": "urgent"}).json["error"]["code"] \
        == "item.bad_priority"
    assert post({"bulletin_id": "1", "start_ms": now_ms()}).json["error"]["code"] == "request.bad_field"
    assert post({"bulletin_id": 999, "start_ms": now_ms() + 60_000}).status_code == 404
    # Another commune's operator sees neither the bulletin nor the area.
    assert post({"bulletin_id": bid, "start_ms": now_ms() + 60_000}, basic("op-an", "pw-op-an")).status_code == 404
    assert post({"bulletin_id": bid, "start_ms": now_ms() + 60_000}, basic("viewer", "pw-viewer")).status_code == 403
    assert client.get("/api/v1/programme/items", headers=ADMIN).json["items"] == []


def test_schedule_at_local_time_and_manifest_content(district, client, tmp_path):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    bid = _ready_bulletin(client, tmp_path)
    local = (datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")) + timedelta(hours=2)).replace(microsecond=0)
    resp = client.post("/api/v1/programme/items", headers=ADMIN,
                       json={"bulletin_id": bid, "start": local.strftime("%Y-%m-%d %H:%M:%S")})
    assert resp.status_code == 201, resp.json
    item = resp.json["item"]
    assert item["start_ms"] == int(local.timestamp() * 1000)

    from controller.db import session_scope
    from controller.models import Publication
    from schedules import signing
    from schedules.manifest import Manifest

    svc = district.extensions["loaxa.services"]
    svc.dispatcher.publish_everything()
    with session_scope(district) as db:
        pub = db.query(Publication).filter_by(kind="manifest", scope="area/qd/phu").one()
        body = signing.verify(svc.key.public_key(), pub.payload.encode(), kind="manifest", scope="area/qd/phu")
    manifest = Manifest.from_body(body)
    assert [i.id for i in manifest.items] == item["occurrences"]
    assert manifest.items[0].media.path.startswith("/media/")


def test_receivers_are_scoped(district, client):
    from controller import auth
    from controller.db import session_scope
    from controller.models import Receiver

    with session_scope(district) as db:
        db.add(Receiver(id="phu-1", area_id="qd/phu", name="Phú 1", token_hash=auth.token_hash("t1"), created_ms=0))
        db.add(Receiver(id="an-1", area_id="qd/an", name="An 1", token_hash=auth.token_hash("t2"), created_ms=0))
    op = basic("op-phu", "pw-op-phu")
    assert [r["id"] for r in client.get("/api/v1/receivers", headers=op).json["receivers"]] == ["phu-1"]
    assert client.get("/api/v1/receivers/an-1", headers=op).status_code == 404
    assert client.get("/api/v1/receivers/an-1", headers=ADMIN).json["receiver"]["id"] == "an-1"
    assert client.get("/api/v1/receivers").status_code == 401


def test_media_needs_a_token(district, client, tmp_path):
    from controller import auth
    from controller.db import session_scope
    from controller.models import Receiver

    bid = _ready_bulletin(client, tmp_path)
    url = client.get(f"/api/v1/bulletins/{bid}", headers=ADMIN).json["bulletin"]["media"]["url"]
    with session_scope(district) as db:
        db.add(Receiver(id="phu-1", area_id="qd/phu", name="Phú 1", token_hash=auth.token_hash("good"), created_ms=0))
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer bad"}).status_code == 401
    with client.get(url, headers={"Authorization": "Bearer good"}) as ok:
        assert ok.status_code == 200 and ok.data[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
        whole = ok.data
    with client.get(url, headers={"Authorization": "Bearer good", "Range": "bytes=10-19"}) as part:
        assert part.status_code == 206 and part.data == whole[10:20]
    assert client.get("/media/..%2Fsecret_key", headers={"Authorization": "Bearer good"}).status_code == 404


def test_openapi_and_health(client):
    doc = client.get("/api/v1/openapi.json").json
    assert "/api/v1/bulletins" in doc["paths"]
    assert client.get("/api/v1/health").json["ok"] is True
