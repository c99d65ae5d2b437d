"""Languages: Vietnamese by default, English as the second locale (Flask-Babel).

Catalogues are kept as .po files in controller/translations and compiled to
.mo under var/ when the app starts, so no compiled file is committed and a
read-only install still works.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, redirect, request, session, url_for
from flask_babel import Babel, get_locale

LOCALES = ("vi", "en")
SOURCE = Path(__file__).parent / "translations"


def N_(message: str) -> str:
    """Mark a string for translation without translating it here (tables of labels).

    The template translates it where it is shown: ``{{ _(labels[code]) }}``.
    """
    return message


def select_locale() -> str:
    """The language chosen in this browser session, else Vietnamese."""
    chosen = session.get("lang")
    return chosen if chosen in LOCALES else "vi"


def compile_catalogues(target: Path) -> Path:
    """Compile every ``messages.po`` into ``target`` (only when the source is newer)."""
    for po in SOURCE.glob("*/LC_MESSAGES/messages.po"):
        mo = target / po.relative_to(SOURCE).with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        mo.parent.mkdir(parents=True, exist_ok=True)
        with open(po, "rb") as fh:
            catalog = read_po(fh)
        tmp = mo.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            write_mo(fh, catalog)
        tmp.replace(mo)
    return target


def init_app(app: Flask) -> None:
    """Compile the catalogues, wire Flask-Babel and the language switch."""
    compiled = compile_catalogues(Path(app.config["VAR_DIR"]) / "translations")
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "vi")
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(compiled)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", app.config["TIMEZONE"])
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals["current_locale"] = lambda: str(get_locale() or "vi")

    @app.get("/lang/<code>")
    def set_language(code: str):
        """Switch the interface language (``vi`` or ``en``) for this browser."""
        if code in LOCALES:
            session["lang"] = code
        from controller.auth import local_path  # local: the language switch is all this module needs of auth

        return redirect(local_path(request.args.get("next")) or url_for("overview.overview"))
