"""The administration page: the area tree, users and roles, session templates, the fleet."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from sqlalchemy import func, select

from controller.db import get_db
from controller.models import ROLES, Area, Receiver
from controller.pages import common
from controller.services import areas
from controller.services.health import in_fleet

bp = Blueprint("admin", __name__)


@bp.get("/admin")
def admin_page():
    """Administration: the area tree (add, rename, merge), users and roles, session templates."""
    principal = common.login_required()
    if not principal.at_least("manager"):
        abort(403)
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    area_list = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    counts = dict(db.execute(select(Receiver.area_id, func.count()).where(in_fleet(visible))
                             .group_by(Receiver.area_id)).all())
    children: dict[str | None, list[Area]] = {}
    for a in area_list:
        parent = a.parent_id if a.parent_id in visible else None
        children.setdefault(parent, []).append(a)
    fleet = db.scalars(select(Receiver).where(Receiver.area_id.in_(visible))
                       .order_by(Receiver.retired_ms.is_not(None), Receiver.area_id, Receiver.id)).all()
    area_names = {a.id: a.name for a in area_list}
    return render_template("admin.html", principal=principal, areas=area_list, children=children, counts=counts,
                           roles=[r for r in ROLES if ROLES.index(r) <= ROLES.index(principal.role)],
                           fleet=fleet, area_names=area_names, now=common.now_ms(), is_online=common.is_online,
                           today=common.today())
