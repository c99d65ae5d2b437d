"""Receivers: status, last heartbeat, recent events, what they played."""

from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from controller.api import bp, receiver_in_scope, require
from controller.db import get_db
from controller.models import Receiver
from controller.services import areas
from controller.services.receivers import receiver_json


@bp.get("/receivers")
@require("viewer")
def list_receivers(principal):
    """Receivers of the visible areas in service (``?retired=1`` adds the retired ones)."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    query = select(Receiver).where(Receiver.area_id.in_(visible)).order_by(Receiver.id)
    if request.args.get("retired") != "1":
        query = query.where(Receiver.retired_ms.is_(None))
    rows = db.scalars(query)
    return jsonify({"receivers": [receiver_json(r) for r in rows]})


@bp.get("/receivers/<rx_id>")
@require("viewer")
def get_receiver(principal, rx_id: str):
    """One receiver: status, last heartbeat, recent events and what it played."""
    return jsonify({"receiver": receiver_json(receiver_in_scope(principal, rx_id), detail=True)})
