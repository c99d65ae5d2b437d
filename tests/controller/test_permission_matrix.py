"""The permission matrix (issue 7): every endpoint × every role × an object in scope and one out of scope.

Complete by construction: ``test_every_endpoint_has_an_entry`` fails while any (method, rule) of
``app.url_map`` has no entry in ``MATRIX``.

HOW TO ADD AN ENDPOINT: append one ``api(...)`` or ``page(...)`` line to ``MATRIX`` (in the section of
its blueprint) with
- ``method``, ``rule``: exactly as ``app.url_map`` spells them (``/api/v1/receivers/<rx_id>``);
- ``need``: the least role allowed (``None`` for public);
- ``req``: ``lambda p, w: Req(path, json=..., form=...)`` building the request for the objects of
  commune ``p`` (a :class:`Place`: ``p.area``, ``p.bulletin``, ``p.item``, ``p.rx``, ``p.fault``,
  ``p.user``, ``p.fresh_item()``, ...) as principal ``w``. Prefer a body that passes the permission
  checks and then fails validation (400/409/422), so that a permitted call changes nothing; use a
  ``p.fresh_*()`` object when the call must succeed (it deletes or approves);
- ``ok``: the status of a permitted call; ``scoped=False`` when the URL names no object;
- lists: ``shows=lambda p, w: [...]``: strings (unique names of ``p``'s objects) that a permitted
  answer must contain for the commune in scope and must not contain for the one out of scope;
- pages: ``refuse=REFUSED_MSG`` when a role below ``need`` is sent back with a message rather than
  a 403, ``scope_first=True`` when the object is looked up before the role is checked;
- ``cross``: ``lambda p, q, w: Req(...)``: an in-scope path naming an out-of-scope object ``q``.
Several entries may share a rule (``variant="..."``): a query filter, or a new action on an existing
form (a test tone on ``/clusters/<rx_id>/command`` gets its own ``form={"action": ...}`` variant).
A known hole in a file that cannot be changed right now: ``xfail={scope: "hole (file): ..."}`` with
scope ``in``, ``out``, ``cross``, ``any`` (matrix cases) or ``missing`` (the unknown-id test).

Principals: anonymous, and viewer, operator, approver, manager and admin scoped to commune A
(``qd/phu``); their out-of-scope objects live in commune B (``qd/an``) of the same district. A
district manager (``qd``) has B in scope and commune C (``pd/dien``, another district) out of scope;
the root administrator has C in scope. API endpoints are called with HTTP Basic, an API token and the
page's session cookie (with ``X-CSRFToken``), pages with a logged-in browser session.

Refusals: 401 for anonymous API calls, a redirect to /login for anonymous page visits, 403 (or a
message) for a role below the minimum, 404 for another commune's object (the same as an unknown id,
so ids are not revealed). A refused call that is not a GET changes no row of any table.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select

from controller import auth, create_app
from controller import db as db_module
from controller.db import session_scope
from controller.models import (
    ROLES,
    Alert,
    AlertTemplate,
    ApiToken,
    Area,
    AuditEntry,
    Base,
    Bulletin,
    ExtraSessionRow,
    Fault,
    Media,
    MissedPlay,
    ProgrammeItem,
    Receiver,
    StreamSource,
    User,
)
from schedules.events import now_ms

from helpers import basic, make_config, seed_district

OK = "permitted"
LOGIN = "redirect to /login"
REFUSED_MSG = "redirect back with a refusal message"
REFUSAL_TEXT = "Bạn không có quyền"  # how the pages' refusal messages begin (vi)

# ----------------------------------------------------------------- places and principals


@dataclass
class Place:
    """The objects seeded in one commune (A, B, C), or ids that exist nowhere (M)."""

    key: str
    area: str
    tag: str  # unique marker in the names of this place's objects
    app: object = None
    bulletin: int = 999_999
    item: int = 999_999
    rx: str = ""
    retired: str = ""  # a receiver taken out of service
    fault: int = 999_999
    user: int = 999_999
    token: int = 999_999
    media: str = "0" * 64 + ".mp3"
    _n: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def user_name(self) -> str:
        return f"target-{self.tag}"

    @property
    def missing(self) -> bool:
        return self.key == "M"

    def _add(self, row):
        with session_scope(self.app) as db:
            db.add(row)
            db.flush()
            return row.id

    def fresh_item(self, *also: Place) -> int:
        """A new draft item owned here (playing here and in ``also``); for M, a deleted item of A."""
        if self.missing:
            return self._add(ProgrammeItem(kind="separator", title="ghost", area_id="qd/phu", duration_ms=60_000,
                                           at_s=39_600, mode="daily", status="deleted", created_ms=0))
        targets = json.dumps([self.area, *(q.area for q in also)]) if also else None
        return self._add(ProgrammeItem(kind="audio", title=f"fresh-{self.tag}", bulletin_id=self.bulletin,
                                       area_id=self.area, targets=targets, duration_ms=60_000, at_s=39_600,
                                       mode="daily", status="draft", created_ms=0))

    def fresh_fault(self) -> int:
        """A new open fault on this place's receiver."""
        if self.missing:
            return 999_999
        return self._add(Fault(rx_id=self.rx, code="amplifier_fault", raised_ms=now_ms()))

    def fresh_extra(self) -> int:
        """A new extra session here (a day in the future)."""
        if self.missing:
            return 999_999
        n = next(self._n)
        return self._add(ExtraSessionRow(area_id=self.area, day="2099-01-01", key=f"x{n}", name=f"extra {n}",
                                         start_s=3600 + n * 60, end_s=3600 + n * 60 + 30))

    def fresh_alert(self) -> str:
        """A correction sent here that is over (stop and confirm: 409; correcting a correction: 409)."""
        if self.missing:
            return "al-khong-co"
        n = next(self._n)
        alert_id = f"al-{self.tag}-{n}"
        targets = json.dumps({"areas": [self.area], "receivers": []})
        self._add(Alert(id=alert_id, mode="drill", status="ended", title=f"alert-{self.tag}", area_id=self.area,
                        targets=targets, scopes=json.dumps([f"area/{self.area}"]), target_rx=json.dumps([self.rx]),
                        content_kind="text", text="x", volume=100, chime=True, repeat=1, gap_s=1.0,
                        corrects_id="al-earlier", created_ms=0))
        return alert_id

    def fresh_relay(self) -> int:
        """A programme relay playing here now (stopping it withdraws it)."""
        if self.missing:
            return 999_999
        return self._add(ProgrammeItem(kind="relay", title=f"relay-{self.tag}", relay_url="https://vov.example/1",
                                       area_id=self.area, duration_ms=600_000, start_ms=now_ms(), mode="once",
                                       status="approved", created_ms=0))

    def fresh_template(self) -> int:
        """A prepared alert text of this area."""
        if self.missing:
            return 999_999
        return self._add(AlertTemplate(area_id=self.area, topic="other", name=f"tpl-{self.tag}", text="x",
                                       updated_ms=0))

    def fresh_source(self) -> int:
        """A saved stream of this area."""
        if self.missing:
            return 999_999
        return self._add(StreamSource(area_id=self.area, name=f"src-{self.tag}", url="https://vov.example/1",
                                      created_ms=0))

    def fresh_token(self, username: str | None) -> int:
        """A new API token of ``username`` (default: this place's target user)."""
        if self.missing:
            return 999_999
        with session_scope(self.app) as db:
            user = db.scalars(select(User).where(User.username == (username or self.user_name))).one()
            n = next(self._n)
            row = ApiToken(user_id=user.id, name=f"fresh-{n}", token_hash=auth.token_hash(f"fresh-{self.tag}-{n}"),
                           created_ms=0)
            db.add(row)
            db.flush()
            return row.id


PLACES = {"A": ("qd/phu", "phu"), "B": ("qd/an", "an"), "C": ("pd/dien", "dien"), "M": ("qd/khong-co", "khong-co")}


@dataclass(frozen=True)
class Who:
    """A principal: its role, the commune its objects in scope are taken from, and one out of its scope."""

    name: str
    username: str | None
    role: str | None
    area: str | None
    inside: str
    outside: str | None

    @property
    def password(self) -> str:
        return f"pw-{self.username}"

    @property
    def secret(self) -> str:
        return f"api-{self.username}"


WHO = [
    Who("anonymous", None, None, None, "A", "B"),
    Who("viewer@A", "v-phu", "viewer", "qd/phu", "A", "B"),
    Who("operator@A", "op-phu", "operator", "qd/phu", "A", "B"),  # made by helpers.seed_district
    Who("approver@A", "appr-phu", "approver", "qd/phu", "A", "B"),
    Who("manager@A", "man-phu", "manager", "qd/phu", "A", "B"),
    Who("admin@A", "adm-phu", "admin", "qd/phu", "A", "B"),
    Who("manager@district", "man-qd", "manager", "qd", "B", "C"),
    Who("admin@root", "admin", "admin", None, "C", None),  # made by helpers.seed_district
]
ROOT = WHO[-1]

# ----------------------------------------------------------------- the matrix


@dataclass
class Req:
    """One request: path with query, and a JSON body or form fields (multipart when a file is among them)."""

    path: str
    json: dict | None = None
    form: dict | None = None


@dataclass
class Entry:
    """How one (method, rule) is guarded; see the module docstring."""

    method: str
    rule: str
    need: str | None
    req: Callable[[Place, Who], Req]
    ok: int | tuple[int, ...] = 200
    scoped: bool = True
    page: bool = False
    refuse: int | str = 403
    scope_first: bool = False
    shows: Callable[[Place, Who], list[str]] | None = None
    filters: bool = False  # an out-of-scope object is left out of a 200 answer rather than answered 404
    cross: Callable[[Place, Place, Who], Req] | None = None
    cross_want: int | str = 404
    variant: str = ""
    xfail: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.method} {self.rule}{self.variant and ' ' + self.variant}"


def api(method: str, rule: str, need: str | None, req, **kw) -> Entry:
    """A JSON API entry (also used for /media, which answers 401 like the API)."""
    return Entry(method, rule, need, req, **kw)


def page(method: str, rule: str, need: str | None, req, **kw) -> Entry:
    """A browser page or form."""
    return Entry(method, rule, need, req, page=True, **kw)


def junk_upload(p: Place) -> dict:
    return {"title": "x", "area": p.area, "file": (io.BytesIO(b"this is not audio at all"), "x.mp3")}


R = Req
V1 = "/api/v1"
MATRIX: list[Entry] = [
    # ---- api: public
    api("GET", f"{V1}/openapi.json", None, lambda p, w: R(f"{V1}/openapi.json"), scoped=False),
    api("GET", f"{V1}/health", None, lambda p, w: R(f"{V1}/health"), scoped=False),
    # ---- api: areas and sessions
    api("GET", f"{V1}/areas", "viewer", lambda p, w: R(f"{V1}/areas"), scoped=False, shows=lambda p, w: [p.area]),
    api("POST", f"{V1}/areas", "manager", ok=409,  # an existing id under an area in scope: 409, nothing made
        req=lambda p, w: R(f"{V1}/areas", json={"id": p.area, "name": "x", "level": "commune", "parent": p.area})),
    api("PATCH", f"{V1}/areas/<path:area_id>", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/areas/{p.area}", json={"name": ""})),
    api("POST", f"{V1}/areas/<path:area_id>/merge", "manager", ok=422,
        req=lambda p, w: R(f"{V1}/areas/{p.area}/merge", json={"into": p.area}),
        cross=lambda p, q, w: R(f"{V1}/areas/{p.area}/merge", json={"into": q.area})),
    api("GET", f"{V1}/areas/<path:area_id>/sessions", "viewer", lambda p, w: R(f"{V1}/areas/{p.area}/sessions")),
    api("PUT", f"{V1}/areas/<path:area_id>/sessions", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/areas/{p.area}/sessions", json={"sessions": "x"})),
    api("POST", f"{V1}/areas/<path:area_id>/extra-sessions", "operator", ok=400,
        req=lambda p, w: R(f"{V1}/areas/{p.area}/extra-sessions", json={})),
    api("DELETE", f"{V1}/areas/<path:area_id>/extra-sessions/<int:extra_id>", "operator", ok=204,
        req=lambda p, w: R(f"{V1}/areas/{p.area}/extra-sessions/{p.fresh_extra()}"),
        cross=lambda p, q, w: R(f"{V1}/areas/{p.area}/extra-sessions/{q.fresh_extra()}")),
    api("GET", f"{V1}/areas/<path:area_id>/timeline", "viewer", lambda p, w: R(f"{V1}/areas/{p.area}/timeline"),
        shows=lambda p, w: [f"item-{p.tag}"]),
    api("GET", f"{V1}/audit", "manager", variant="?object_id=<item>", filters=True,
        req=lambda p, w: R(f"{V1}/audit?object_id={p.item}"), shows=lambda p, w: [f"item-{p.tag}"]),
    api("GET", f"{V1}/audit", "manager", variant="?object_id=<area>", filters=True,
        req=lambda p, w: R(f"{V1}/audit?object_id={p.area}"), shows=lambda p, w: [f"area-{p.tag}"]),
    api("GET", f"{V1}/audit", "manager", variant="?object_id=<user>", filters=True,
        req=lambda p, w: R(f"{V1}/audit?object_id={p.user}"), shows=lambda p, w: [f"target-{p.tag}"]),
    api("GET", f"{V1}/audit", "manager", variant="?object_id=<token>", filters=True,
        req=lambda p, w: R(f"{V1}/audit?object_id={p.token}"), shows=lambda p, w: [f"token-{p.tag}"]),
    api("GET", f"{V1}/audit", "manager", variant="?object_id=<receiver>", filters=True,
        req=lambda p, w: R(f"{V1}/audit?object_id={p.rx}"), shows=lambda p, w: [f"receiver-{p.tag}"]),
    # (the unfiltered list keeps the newest 200 lines before filtering, so its content depends on test order)
    api("GET", f"{V1}/audit", "manager", lambda p, w: R(f"{V1}/audit"), scoped=False),
    # ---- api: bulletins
    api("GET", f"{V1}/bulletins", "viewer", lambda p, w: R(f"{V1}/bulletins"), scoped=False,
        shows=lambda p, w: [f"bulletin-{p.tag}"]),
    api("POST", f"{V1}/bulletins", "operator", ok=422,  # not audio: refused after the area check
        req=lambda p, w: R(f"{V1}/bulletins", form=junk_upload(p))),
    api("GET", f"{V1}/bulletins/<int:bulletin_id>", "viewer", lambda p, w: R(f"{V1}/bulletins/{p.bulletin}")),
    api("POST", f"{V1}/bulletins/tts", "operator", ok=400,
        req=lambda p, w: R(f"{V1}/bulletins/tts", json={"title": "x", "area": p.area})),
    api("POST", f"{V1}/bulletins/tts/preview", "operator", ok=400,
        req=lambda p, w: R(f"{V1}/bulletins/tts/preview", json={"area": p.area})),
    api("GET", f"{V1}/tts/engines", "viewer", lambda p, w: R(f"{V1}/tts/engines"), scoped=False),
    # ---- api: clusters, faults, reports
    api("GET", f"{V1}/clusters", "viewer", lambda p, w: R(f"{V1}/clusters"), scoped=False,
        shows=lambda p, w: [f"rx-{p.tag}"]),
    api("GET", f"{V1}/clusters", "viewer", lambda p, w: R(f"{V1}/clusters?area={p.area}"), variant="?area=",
        shows=lambda p, w: [f"rx-{p.tag}"]),
    api("GET", f"{V1}/clusters/<rx_id>/history", "viewer", lambda p, w: R(f"{V1}/clusters/{p.rx}/history")),
    api("GET", f"{V1}/faults", "viewer", lambda p, w: R(f"{V1}/faults"), scoped=False,
        shows=lambda p, w: [f"rx-{p.tag}"]),
    api("GET", f"{V1}/faults", "viewer", lambda p, w: R(f"{V1}/faults?area={p.area}"), variant="?area=",
        shows=lambda p, w: [f"rx-{p.tag}"]),
    api("POST", f"{V1}/faults/<int:fault_id>/ack", "operator",
        req=lambda p, w: R(f"{V1}/faults/{p.fresh_fault()}/ack", json={"note": "x"})),
    api("GET", f"{V1}/reports/as-run", "viewer", lambda p, w: R(f"{V1}/reports/as-run"), scoped=False,
        shows=lambda p, w: [f"rx-{p.tag}"]),
    api("GET", f"{V1}/reports/as-run", "viewer", lambda p, w: R(f"{V1}/reports/as-run?area={p.area}&format=csv"),
        variant="?area=&format=csv", shows=lambda p, w: [f"rx-{p.tag}"]),
    # ---- api: receivers
    api("GET", f"{V1}/receivers", "viewer", lambda p, w: R(f"{V1}/receivers"), scoped=False,
        shows=lambda p, w: [f"rx-{p.tag}"]),
    api("GET", f"{V1}/receivers/<rx_id>", "viewer", lambda p, w: R(f"{V1}/receivers/{p.rx}")),
    api("POST", f"{V1}/receivers", "manager", ok=409,  # a taken id in an area in scope: 409, nothing made
        req=lambda p, w: R(f"{V1}/receivers", json={"id": p.rx, "area": p.area})),
    api("PATCH", f"{V1}/receivers/<rx_id>", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/receivers/{p.rx}", json={"lat": 91}),
        cross=lambda p, q, w: R(f"{V1}/receivers/{p.rx}", json={"area": q.area})),
    api("POST", f"{V1}/receivers/<rx_id>/bundle", "manager", ok=400,  # an unknown sink: no credentials issued
        req=lambda p, w: R(f"{V1}/receivers/{p.rx}/bundle", json={"sink": "x"})),
    api("POST", f"{V1}/receivers/<rx_id>/retire", "manager", ok=409,  # retiring a retired box: 409
        req=lambda p, w: R(f"{V1}/receivers/{p.retired}/retire")),
    # ---- api: programme items
    api("GET", f"{V1}/programme/items", "viewer", lambda p, w: R(f"{V1}/programme/items"), scoped=False,
        shows=lambda p, w: [f"item-{p.tag}"]),
    api("GET", f"{V1}/programme/items", "viewer", lambda p, w: R(f"{V1}/programme/items?area={p.area}"),
        variant="?area=", shows=lambda p, w: [f"item-{p.tag}"]),
    api("POST", f"{V1}/programme/items", "operator", ok=400,  # an unknown mode: refused after the scope checks
        req=lambda p, w: R(f"{V1}/programme/items", json={"bulletin_id": p.bulletin, "at": "11:00", "mode": "x"}),
        cross=lambda p, q, w: R(f"{V1}/programme/items", json={"bulletin_id": p.bulletin, "targets": [p.area, q.area],
                                                               "at": "11:00", "mode": "x"})),
    api("GET", f"{V1}/programme/items/<int:item_id>", "viewer", lambda p, w: R(f"{V1}/programme/items/{p.item}")),
    api("PATCH", f"{V1}/programme/items/<int:item_id>", "operator", ok=400,
        req=lambda p, w: R(f"{V1}/programme/items/{p.item}", json={"mode": "x"}),
        cross=lambda p, q, w: R(f"{V1}/programme/items/{p.fresh_item(q)}", json={"mode": "x"})),
    # An item of A that also plays in B changes B's programme: only who has both in scope may delete it.
    api("DELETE", f"{V1}/programme/items/<int:item_id>", "operator", ok=204,
        req=lambda p, w: R(f"{V1}/programme/items/{p.fresh_item()}"),
        cross=lambda p, q, w: R(f"{V1}/programme/items/{p.fresh_item(q)}"), cross_want=403),
    api("POST", f"{V1}/programme/items/<int:item_id>/approve", "approver",
        req=lambda p, w: R(f"{V1}/programme/items/{p.fresh_item()}/approve"),
        cross=lambda p, q, w: R(f"{V1}/programme/items/{p.fresh_item(q)}/approve"), cross_want=403),
    api("POST", f"{V1}/programme/items/<int:item_id>/reject", "approver",
        req=lambda p, w: R(f"{V1}/programme/items/{p.fresh_item()}/reject", json={"reason": "x"}),
        cross=lambda p, q, w: R(f"{V1}/programme/items/{p.fresh_item(q)}/reject"), cross_want=403),
    # ---- api: tokens (each user's own; another user's token is "out of scope" even for an administrator)
    api("POST", f"{V1}/tokens", "viewer", lambda p, w: R(f"{V1}/tokens", json={"name": ""}), ok=400, scoped=False),
    api("GET", f"{V1}/tokens", "viewer", lambda p, w: R(f"{V1}/tokens"), scoped=False,
        shows=lambda p, w: [f"own-{w.username}"] if p.key == w.inside else [f"token-{p.tag}"]),
    api("DELETE", f"{V1}/tokens/<int:token_id>", "viewer", ok=204,
        req=lambda p, w: R(f"{V1}/tokens/{p.fresh_token(w.username if p.key == w.inside else None)}")),
    # ---- api: users
    api("GET", f"{V1}/users", "manager", lambda p, w: R(f"{V1}/users"), scoped=False,
        shows=lambda p, w: [f"target-{p.tag}"]),
    api("POST", f"{V1}/users", "manager", ok=409,  # a taken username in an area in scope: 409, nothing made
        req=lambda p, w: R(f"{V1}/users", json={"username": p.user_name, "password": "long-enough",
                                                 "role": "viewer", "area": p.area})),
    api("PATCH", f"{V1}/users/<int:user_id>", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/users/{p.user}", json={"password": "short"}),
        cross=lambda p, q, w: R(f"{V1}/users/{p.user}", json={"area": q.area, "password": "short"})),
    api("POST", f"{V1}/users/<int:user_id>/unlock", "manager", req=lambda p, w: R(f"{V1}/users/{p.user}/unlock")),
    # ---- api: emergency broadcasts (sending needs the alert permission: managers, or operators granted it)
    api("GET", f"{V1}/alerts", "viewer", lambda p, w: R(f"{V1}/alerts"), scoped=False),
    api("POST", f"{V1}/alerts/preview", "manager", ok=400,  # no content: refused after the target checks
        req=lambda p, w: R(f"{V1}/alerts/preview", json={"mode": "drill", "areas": [p.area]})),
    api("POST", f"{V1}/alerts", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/alerts", json={"mode": "drill", "areas": [p.area]})),
    api("GET", f"{V1}/alerts/<alert_id>", "viewer", lambda p, w: R(f"{V1}/alerts/{p.fresh_alert()}")),
    api("POST", f"{V1}/alerts/<alert_id>/confirm", "manager", ok=409,
        req=lambda p, w: R(f"{V1}/alerts/{p.fresh_alert()}/confirm")),
    api("POST", f"{V1}/alerts/<alert_id>/stop", "manager", ok=409,
        req=lambda p, w: R(f"{V1}/alerts/{p.fresh_alert()}/stop")),
    api("POST", f"{V1}/alerts/<alert_id>/correction", "manager", ok=409,
        req=lambda p, w: R(f"{V1}/alerts/{p.fresh_alert()}/correction")),
    # live voice: the matrix's controller runs no Icecast, so a permitted call ends in 503 live.unavailable
    api("POST", f"{V1}/live", "manager", ok=503,
        req=lambda p, w: R(f"{V1}/live", json={"mode": "drill", "areas": [p.area]})),
    api("POST", f"{V1}/live/<alert_id>/audio", "operator", ok=503,
        req=lambda p, w: R(f"{V1}/live/{p.fresh_alert()}/audio?seq=0")),
    api("POST", f"{V1}/live/<alert_id>/stop", "manager", ok=503,
        req=lambda p, w: R(f"{V1}/live/{p.fresh_alert()}/stop")),
    api("GET", f"{V1}/alert-templates", "viewer", lambda p, w: R(f"{V1}/alert-templates"), scoped=False),
    api("POST", f"{V1}/alert-templates", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/alert-templates", json={"area": p.area, "name": ""})),
    api("PATCH", f"{V1}/alert-templates/<int:template_id>", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/alert-templates/{p.fresh_template()}", json={"text": ""})),
    api("DELETE", f"{V1}/alert-templates/<int:template_id>", "manager", ok=204,
        req=lambda p, w: R(f"{V1}/alert-templates/{p.fresh_template()}")),
    api("POST", f"{V1}/relays", "approver", ok=400,  # a stream URL the receivers cannot play: refused last
        req=lambda p, w: R(f"{V1}/relays", json={"areas": [p.area], "url": "ftp://vov.example/1"})),
    api("POST", f"{V1}/relays/<int:item_id>/stop", "approver",
        req=lambda p, w: R(f"{V1}/relays/{p.fresh_relay()}/stop")),
    api("GET", f"{V1}/stream-sources", "viewer", lambda p, w: R(f"{V1}/stream-sources"), scoped=False),
    api("POST", f"{V1}/stream-sources", "manager", ok=400,
        req=lambda p, w: R(f"{V1}/stream-sources", json={"area": p.area, "name": ""})),
    api("DELETE", f"{V1}/stream-sources/<int:source_id>", "manager", ok=204,
        req=lambda p, w: R(f"{V1}/stream-sources/{p.fresh_source()}")),
    # ---- media: any signed-in user or receiver; content-addressed, so not scoped by area (the hash is the name)
    api("GET", "/media/<name>", "viewer", lambda p, w: R(f"/media/{p.media}"), scoped=False),
    # ---- pages: public
    page("GET", "/login", None, lambda p, w: R("/login"), scoped=False),
    page("POST", "/login", None, ok=(302, 401), scoped=False,
         req=lambda p, w: R("/login", form={"username": w.username or "nobody", "password": w.password})),
    page("POST", "/logout", None, lambda p, w: R("/logout"), ok=302, scoped=False),
    page("GET", "/lang/<code>", None, lambda p, w: R("/lang/en"), ok=302, scoped=False),
    # ---- pages: web
    page("GET", "/", "viewer", lambda p, w: R("/"), scoped=False, shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/admin", "manager", lambda p, w: R("/admin"), scoped=False, shows=lambda p, w: [p.area]),
    page("GET", "/bulletins", "viewer", lambda p, w: R("/bulletins"), scoped=False,  # areas: in the upload form
         shows=lambda p, w: [p.area] if w.role != "viewer" else []),
    page("GET", "/programme", "viewer", lambda p, w: R(f"/programme?area={p.area}"), variant="?area=",
         shows=lambda p, w: [f"item-{p.tag}"]),
    page("POST", "/programme/items/<int:item_id>/<any(approve,reject):decision>", "approver", ok=302,
         variant="approve", refuse=REFUSED_MSG, scope_first=True, cross_want=REFUSED_MSG,
         req=lambda p, w: R(f"/programme/items/{p.fresh_item()}/approve", form={"area": p.area}),
         cross=lambda p, q, w: R(f"/programme/items/{p.fresh_item(q)}/approve", form={"area": p.area})),
    page("POST", "/programme/items/<int:item_id>/<any(approve,reject):decision>", "approver", ok=302,
         variant="reject", refuse=REFUSED_MSG, scope_first=True, cross_want=REFUSED_MSG,
         req=lambda p, w: R(f"/programme/items/{p.fresh_item()}/reject", form={"area": p.area}),
         cross=lambda p, q, w: R(f"/programme/items/{p.fresh_item(q)}/reject", form={"area": p.area})),
    page("GET", "/receivers/<rx_id>", "viewer", lambda p, w: R(f"/receivers/{p.rx}"), shows=lambda p, w: [p.rx]),
    # ---- pages: emergency broadcasts (compose, live view, its event stream; changes go through the API)
    page("GET", "/alerts", "viewer", lambda p, w: R("/alerts"), scoped=False),
    page("GET", "/alerts/<alert_id>", "viewer", lambda p, w: R(f"/alerts/{p.fresh_alert()}"),
         shows=lambda p, w: [f"alert-{p.tag}"]),
    page("GET", "/alerts/<alert_id>/events", "viewer", lambda p, w: R(f"/alerts/{p.fresh_alert()}/events"),
         shows=lambda p, w: [f"alert-{p.tag}"]),
    # ---- pages: status
    page("GET", "/clusters", "viewer", lambda p, w: R("/clusters"), scoped=False, shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/clusters", "viewer", lambda p, w: R(f"/clusters?area={p.area}"), variant="?area=",
         shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/clusters/map.json", "viewer", lambda p, w: R("/clusters/map.json"), scoped=False,
         shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/clusters/map.json", "viewer", lambda p, w: R(f"/clusters/map.json?area={p.area}"),
         variant="?area=", shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/clusters/<rx_id>", "viewer", lambda p, w: R(f"/clusters/{p.rx}"), shows=lambda p, w: [p.rx]),
    page("POST", "/clusters/<rx_id>/command", "operator", ok=302, refuse=REFUSED_MSG, scope_first=True,
         req=lambda p, w: R(f"/clusters/{p.rx}/command", form={"action": "resync"})),
    page("POST", "/clusters/<rx_id>/command", "operator", ok=302, refuse=REFUSED_MSG, scope_first=True,
         variant="test_tone", req=lambda p, w: R(f"/clusters/{p.rx}/command", form={"action": "test_tone"})),
    page("GET", "/faults", "viewer", lambda p, w: R("/faults"), scoped=False, shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/faults", "viewer", lambda p, w: R(f"/faults?area={p.area}"), variant="?area=",
         shows=lambda p, w: [f"rx-{p.tag}"]),
    page("POST", "/faults/<int:fault_id>/ack", "operator", ok=302, refuse=REFUSED_MSG, scope_first=True,
         req=lambda p, w: R(f"/faults/{p.fresh_fault()}/ack", form={"note": "x"})),
    page("GET", "/reports", "viewer", lambda p, w: R("/reports"), scoped=False, shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/reports", "viewer", lambda p, w: R(f"/reports?area={p.area}"), variant="?area=",
         shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/reports/as-run.csv", "viewer", lambda p, w: R(f"/reports/as-run.csv?area={p.area}"),
         variant="?area=", shows=lambda p, w: [f"rx-{p.tag}"]),
    page("GET", "/reports/print", "viewer", lambda p, w: R(f"/reports/print?area={p.area}"), variant="?area=",
         shows=lambda p, w: [f"item-{p.tag}"]),
]

# ----------------------------------------------------------------- the app, seeded once per module


class World:
    """The module's app with its places, principals' sessions and a way to send as any of them."""

    def __init__(self, app):
        self.app = app
        self.places: dict[str, Place] = {}
        self.sessions: dict[str | None, tuple[str, str]] = {}  # username -> (session cookie, CSRF token)

    def fork(self, username: str | None):
        """A fresh test client holding ``username``'s browser session (so one case cannot disturb another)."""
        cookie, token = self.sessions[username]
        client = self.app.test_client()
        client.set_cookie("session", cookie)
        return client, token

    def send(self, who: Who, way: str, entry: Entry, req: Req, csrf: bool = True, headers: dict | None = None):
        """Send ``req`` as ``who`` by ``way``: basic, bearer, or the browser session (anonymous: logged out)."""
        headers = dict(headers or {})
        if way == "basic":
            client = self.app.test_client()
            headers.update(basic(who.username, who.password))
        elif way == "bearer":
            client = self.app.test_client()
            headers["Authorization"] = f"Bearer {who.secret}"
        else:
            client, token = self.fork(who.username)
            if csrf and entry.method != "GET" and not entry.page:
                headers["X-CSRFToken"] = token
        form = dict(req.form) if req.form is not None else None
        if entry.page and entry.method != "GET" and csrf and way in ("session", "anon"):
            form = {**(form or {}), "csrf_token": self.sessions[who.username][1]}
        return client.open(req.path, method=entry.method, headers=headers, json=req.json, data=form)

    def snapshot(self) -> dict[str, list]:
        """Every row of every table (less the token's last-use time, which any authenticated call sets)."""
        out = {}
        with session_scope(self.app) as db:
            for table in Base.metadata.sorted_tables:
                cols = [c for c in table.c if c.name != "last_used_ms"]
                out[table.name] = sorted((tuple(r) for r in db.execute(select(*cols))), key=repr)
        return out


def _seed(app, media_dir: Path) -> dict[str, Place]:
    """Communes A, B (district qd) and C (district pd), each with a bulletin, an item, a receiver with a
    fault and a missed play, a user with an API token, and audit lines; the principals and their tokens."""
    seed_district(app)  # hue > qd > qd/phu, qd/an; users admin (root), op-phu, op-an, viewer (root)
    places = {k: Place(k, area, tag, app=app) for k, (area, tag) in PLACES.items()}
    now = now_ms()
    with session_scope(app) as db:
        db.add_all([Area(id="pd", name="Phong Điền", level="district", parent_id="hue"),
                    Area(id="pd/dien", name="Phong Hiền", level="commune", parent_id="pd")])
        for who in WHO:
            if who.username and db.scalars(select(User).where(User.username == who.username)).first() is None:
                db.add(User(username=who.username, password_hash=auth.hash_password(who.password), role=who.role,
                            area_id=who.area, created_ms=0))
        db.flush()
        for who in WHO:
            if who.username:
                uid = db.scalars(select(User.id).where(User.username == who.username)).one()
                db.add(ApiToken(user_id=uid, name=f"own-{who.username}", token_hash=auth.token_hash(who.secret),
                                created_ms=0))
        for n, p in enumerate(places[k] for k in "ABC"):
            sha = f"{n + 1:x}" * 64
            (media_dir / f"{sha}.mp3").write_bytes(b"ID3 not really audio")
            p.media = f"{sha}.mp3"
            db.add(Media(sha256=sha, format="mp3", bytes=20, duration_ms=60_000, created_ms=0))
            db.flush()
            bulletin = Bulletin(title=f"bulletin-{p.tag}", area_id=p.area, status="ready", media_sha256=sha,
                                created_ms=0)
            db.add(bulletin)
            db.flush()
            item = ProgrammeItem(kind="audio", title=f"item-{p.tag}", bulletin_id=bulletin.id, area_id=p.area,
                                 duration_ms=60_000, at_s=36_000, mode="daily", status="approved", created_ms=0)
            p.rx = f"rx-{p.tag}"
            rx = Receiver(id=p.rx, area_id=p.area, name=p.rx, lat=16.5 + n / 10, lon=107.5,
                          token_hash=auth.token_hash(f"rx-secret-{p.tag}"), created_ms=0)
            p.retired = f"gone-{p.tag}"
            db.add(Receiver(id=p.retired, area_id=p.area, name=p.retired, token_hash=auth.token_hash(p.retired),
                            created_ms=0, retired_ms=1))
            user = User(username=p.user_name, password_hash="!", role="viewer", area_id=p.area, created_ms=0)
            db.add_all([item, rx, user])
            db.flush()
            token = ApiToken(user_id=user.id, name=f"token-{p.tag}", token_hash=auth.token_hash(f"t-{p.tag}"),
                             created_ms=0)
            fault = Fault(rx_id=rx.id, code="power_loss", raised_ms=now - 60_000)
            db.add_all([token, fault, MissedPlay(occurrence_id=f"occ-{p.tag}", programme_item_id=item.id,
                                                 rx_id=rx.id, planned_start_ms=now - 3600_000, detected_ms=now)])
            db.flush()
            p.bulletin, p.item, p.fault, p.user, p.token = bulletin.id, item.id, fault.id, user.id, token.id
            for kind, oid, detail in (("programme_item", item.id, {"title": f"item-{p.tag}"}),
                                      ("area", p.area, {"name": f"area-{p.tag}"}),
                                      ("user", user.id, {"username": p.user_name}),
                                      ("api_token", token.id, {"name": f"token-{p.tag}"}),
                                      ("receiver", rx.id, {"note": f"receiver-{p.tag}"})):
                db.add(AuditEntry(ts_ms=now, user_id=None, action="seed", object_type=kind, object_id=str(oid),
                                  detail=json.dumps(detail)))
        places["M"].rx = places["M"].retired = "rx-khong-co"
    return places


def _login(app, who: Who) -> tuple[str, str]:
    """Log ``who`` in through the login form; their session cookie and CSRF token (anonymous: a bare session)."""
    client = app.test_client()
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    if who.username is not None:
        resp = client.post("/login", data={"username": who.username, "password": who.password, "csrf_token": token})
        assert resp.status_code == 302, (who, resp.status_code)
        token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    return client.get_cookie("session").value, token


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One app for the module, seeded once (argon2 is cheap in tests: see tests/conftest.py)."""
    app = create_app(make_config(tmp_path_factory.mktemp("matrix")))
    db_module.upgrade(app.config["DATABASE_URL"])
    media_dir = Path(app.config["MEDIA_DIR"])
    media_dir.mkdir(parents=True, exist_ok=True)
    w = World(app)
    w.places = _seed(app, media_dir)
    for who in WHO:
        w.sessions[who.username] = _login(app, who)
    yield w
    app.extensions["loaxa.services"].stop()
    app.extensions["loaxa.engine"].dispose()


# ----------------------------------------------------------------- expectations


def _want(entry: Entry, who: Who, scope: str):
    """What ``who`` must get from ``entry`` for an object ``scope`` (in, out, cross, any, missing)."""
    if entry.need is None:
        return OK
    if who.role is None:
        return LOGIN if entry.page else 401
    if ROLES.index(who.role) < ROLES.index(entry.need):
        if entry.page and entry.scope_first and scope in ("out", "missing"):
            return 404
        return entry.refuse
    if scope in ("in", "any") or (scope == "out" and entry.filters):
        return OK
    if scope == "cross":
        return entry.cross_want
    return 404


def _is_refusal_redirect(resp) -> bool:
    if resp.status_code != 302:
        return False
    msg = parse_qs(urlparse(resp.headers["Location"]).query).get("msg", [""])[0]
    return msg.startswith(REFUSAL_TEXT)


def _check(resp, want, entry: Entry) -> None:
    status = resp.status_code
    if want == OK:
        ok = entry.ok if isinstance(entry.ok, tuple) else (entry.ok,)
        assert status in ok and not _is_refusal_redirect(resp), (status, resp.headers.get("Location"),
                                                                 resp.get_data(as_text=True)[:300])
    elif want == LOGIN:
        assert status == 302 and urlparse(resp.headers["Location"]).path == "/login", status
    elif want == REFUSED_MSG:
        assert _is_refusal_redirect(resp), (status, resp.headers.get("Location"))
    else:
        assert status == want, (status, resp.get_data(as_text=True)[:300])
        if status == 401 and not entry.page:  # no Basic challenge: browsers must never cache a password for the API
            assert "Basic" not in resp.headers.get("WWW-Authenticate", "")


def _cases():
    for entry in MATRIX:
        ways = ("session",) if entry.page else ("basic", "bearer", "session")
        scopes = ("in", "out", *(("cross",) if entry.cross else ())) if entry.scoped else ("any",)
        for who, scope in itertools.product(WHO, scopes):
            if scope in ("out", "cross") and who.outside is None:
                continue
            for way in ("anon",) if who.username is None else ways:
                marks = [pytest.mark.xfail(strict=True, reason=entry.xfail[scope])] if scope in entry.xfail else []
                yield pytest.param(entry, who, scope, way, marks=marks, id=f"{entry.id} | {who.name} | {scope} | {way}")


# ----------------------------------------------------------------- tests


def test_every_endpoint_has_an_entry(world):
    """A new endpoint fails here until MATRIX says who may call it."""
    routes = {(m, r.rule) for r in world.app.url_map.iter_rules() if r.endpoint != "static"
              for m in r.methods - {"HEAD", "OPTIONS"}}
    table = {(e.method, e.rule) for e in MATRIX}
    assert sorted(routes - table) == [], "endpoints without an entry in MATRIX (see the top of this file)"
    assert sorted(table - routes) == [], "MATRIX entries for endpoints that no longer exist"


@pytest.mark.parametrize(("entry", "who", "scope", "way"), list(_cases()))
def test_matrix(world, entry: Entry, who: Who, scope: str, way: str):
    """One endpoint, one principal, one object (in or out of scope), one way in."""
    inside, outside = world.places[who.inside], world.places.get(who.outside or "")
    if scope == "cross":
        req = entry.cross(inside, outside, who)
    else:
        req = entry.req(outside if scope == "out" else inside, who)
    want = _want(entry, who, scope)
    before = world.snapshot() if want != OK and entry.method != "GET" else None
    with world.send(who, way, entry, req) as resp:
        _check(resp, want, entry)
        text = resp.get_data(as_text=True)
    if before is not None:
        assert world.snapshot() == before, "a refused call changed the database"
    if want == OK and entry.shows is not None:
        if scope in ("in", "any"):
            for marker in entry.shows(inside, who):
                assert marker in text, f"{marker!r} (in scope) missing from the answer"
        if outside is not None and scope in ("in", "any", "out"):
            for marker in entry.shows(outside, who):
                assert marker not in text, f"{marker!r} (out of scope) revealed"


def _scoped_entries():
    for e in MATRIX:
        if e.scoped and not e.filters and e.need is not None:
            marks = [pytest.mark.xfail(strict=True, reason=e.xfail["missing"])] if "missing" in e.xfail else []
            yield pytest.param(e, marks=marks, id=e.id)


@pytest.mark.parametrize("entry", list(_scoped_entries()))
def test_unknown_ids_answer_like_other_communes(world, entry: Entry):
    """An id that does not exist (or a deleted item) answers 404, as another commune's does, even for root."""
    req = entry.req(world.places["M"], ROOT)
    before = world.snapshot()
    with world.send(ROOT, "session" if entry.page else "bearer", entry, req) as resp:
        assert resp.status_code == 404, (resp.status_code, resp.headers.get("Location"))
    assert world.snapshot() == before


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id) for e in MATRIX if e.page and e.method == "POST"])
def test_form_without_csrf_token_is_refused(world, entry: Entry):
    """A page form posted without its CSRF token: 400, nothing changed (also for an administrator)."""
    req = entry.req(world.places[ROOT.inside], ROOT)
    before = world.snapshot()
    with world.send(ROOT, "session", entry, req, csrf=False) as resp:
        assert resp.status_code == 400
    assert world.snapshot() == before


@pytest.mark.parametrize("header", [None, "forged"])
@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id) for e in MATRIX
                                   if not e.page and e.method != "GET" and e.need is not None])
def test_api_with_session_cookie_needs_csrf_header(world, entry: Entry, header):
    """The page's session cookie alone (or with a forged X-CSRFToken) changes nothing through the API."""
    req = entry.req(world.places[ROOT.inside], ROOT)
    before = world.snapshot()
    with world.send(ROOT, "session", entry, req, csrf=False,
                    headers={"X-CSRFToken": header} if header else None) as resp:
        assert resp.status_code == 400 and resp.json["error"]["code"] == "auth.csrf"
    assert world.snapshot() == before


def test_a_receiver_token_is_not_an_api_credential(world):
    """Receivers fetch media with their bearer token; the same token opens no API endpoint."""
    headers = {"Authorization": "Bearer rx-secret-phu"}
    client = world.app.test_client()
    assert client.get("/api/v1/receivers", headers=headers).status_code == 401
    assert client.post("/api/v1/tokens", json={"name": "x"}, headers=headers).status_code == 401
    with client.get(f"/media/{world.places['A'].media}", headers=headers) as resp:
        assert resp.status_code == 200
