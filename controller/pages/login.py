"""Logging in and out of the pages (a CSRF-protected form and the browser session)."""

from __future__ import annotations

import time

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from controller import auth
from controller.db import get_db

bp = Blueprint("login", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log in with username and password (CSRF-protected form)."""
    error = _("Phiên làm việc đã hết hạn, vui lòng đăng nhập lại.") if session.pop("expired", False) else None
    status = 200
    if request.method == "POST":
        try:
            principal = auth.authenticate(get_db(), request.form.get("username", ""),
                                          request.form.get("password", ""))
        except auth.LoginBusy:
            return render_template("login.html", error=_("Máy chủ đang bận, xin thử lại sau giây lát.")), 503
        if principal is None:
            # One answer for an unknown account, a wrong password and an address that must wait (auth.py).
            error = _("Sai tên đăng nhập hoặc mật khẩu.")
            status = 401
            time.sleep(0.5)
        else:
            auth.web_login(principal)
            return redirect(auth.local_path(request.args.get("next")) or url_for("overview.overview"))
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout():
    """End the browser session."""
    auth.web_logout()
    return redirect(url_for("login.login"))
