"""The bulletins page: upload with progress, record, type text to be read, listen, schedule."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_babel import gettext as _
from sqlalchemy import select

from controller.db import get_db
from controller.labels import session_name
from controller.models import Area, ExtraSessionRow, SessionTemplateRow
from controller.pages import common
from controller.services import areas
from schedules.programme import default_templates

bp = Blueprint("bulletins", __name__)


def session_names(db, visible: set[str]) -> dict[str, str]:
    """Session key -> name over the visible areas (level defaults, the areas' own, extra sessions): two queries."""
    names = {t.key: t.name for level in default_templates().values() for t in level}
    own = db.execute(select(SessionTemplateRow.key, SessionTemplateRow.name)
                     .where(SessionTemplateRow.area_id.in_(visible)))
    extras = db.execute(select(ExtraSessionRow.key, ExtraSessionRow.name).where(ExtraSessionRow.area_id.in_(visible)))
    names.update(dict(own.all()))
    names.update(dict(extras.all()))
    return {k: session_name(v) for k, v in names.items()}


@bp.get("/bulletins")
def bulletins_page():
    """Bulletins: upload with progress, record from the microphone, type text to be read, listen, schedule."""
    principal = common.login_required()
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    area_list = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    texts = {  # words the page's script shows, translated here
        "uploading": _("Đang tải lên"), "processing": _("Đang xử lý âm thanh"), "ready": _("Sẵn sàng"),
        "failed": _("Lỗi"), "queued": _("Đang chờ xử lý"), "recording": _("Đang ghi âm... bấm lần nữa để dừng"),
        "no_mic": _("Không dùng được micrô của máy này."), "too_large": _("Tệp quá lớn."),
        "scheduled": _("Đã xếp lịch."), "draft": _("Đã xếp lịch, chờ duyệt."),
        "network": _("Mất kết nối tới máy chủ, hãy thử lại."), "recorded": _("Bản ghi âm"),
        "pending": _("Chờ duyệt"), "approve": _("Duyệt"), "reject": _("Từ chối"), "approved": _("Đã duyệt."),
        "rejected": _("Đã từ chối."), "daily": _("hằng ngày"), "sessions": session_names(db, visible),
    }
    today = common.today().isoformat()
    return render_template("bulletins.html", principal=principal, areas=area_list, texts=texts, today=today,
                           can_edit=principal.at_least("operator"),
                           max_mb=int(current_app.config["MAX_UPLOAD_BYTES"]) // (1024 * 1024))
