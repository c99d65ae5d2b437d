"""Refusals and failures as a page in the user's language (JSON under /api/); never a stack trace."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_babel import gettext as _

from controller import auth

bp = Blueprint("errors", __name__)


@bp.app_errorhandler(403)
@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
@bp.app_errorhandler(500)
def error_page(exc):
    """A page in the user's language for refusals and failures (JSON under /api/); never a stack trace."""
    code = getattr(exc, "code", 500) or 500
    if request.path.startswith("/api/"):
        from controller.errors import error_response

        return error_response(code, f"http.{code}", getattr(exc, "name", "error"), _("Có lỗi xảy ra."))
    messages = {403: _("Bạn không có quyền xem trang này."), 404: _("Không tìm thấy trang này."),
                405: _("Thao tác không hợp lệ."), 500: _("Có lỗi xảy ra. Xin thử lại sau.")}
    principal = auth.web_principal()
    return render_template("error.html", principal=principal, code=code,
                           message=messages.get(code, messages[500])), code
