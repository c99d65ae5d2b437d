"""Labels for people: known codes translated, anything else shown as the data it is.

Jinja's newstyle ``_()`` marks its result safe and applies ``%`` formatting, so data passed
to it is a script injection (and a 500 on the first ``%``). Pages and Python code therefore
never translate a value they did not write themselves: they look it up in a table of literal
message keys (marked with ``N_`` so that pybabel extracts them) and translate only a hit.
A miss comes back as the plain string, which Jinja escapes like any other value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_babel import gettext

from controller.i18n import N_

# The names of the default sessions (schedules/data/levels.toml); operators' own names are data.
SESSION_NAMES = frozenset({N_("Buổi sáng"), N_("Buổi trưa"), N_("Buổi chiều"), N_("Buổi tối")})


def label(table: Mapping[str, str], code: Any, default: str | None = None) -> str:
    """The translated label of ``code`` in ``table``; otherwise ``default``, or the code itself as text.

    The result is a plain ``str`` (never markup): templates escape it.
    """
    if isinstance(code, str) and code in table:
        key = table[code]
        return gettext(key) if key else ""
    if default is not None:
        return default
    return "" if code is None else str(code)


def session_name(name: Any) -> str:
    """A session's name: the default names translated, an operator's own name as written."""
    if isinstance(name, str) and name in SESSION_NAMES:
        return gettext(name)
    return "" if name is None else str(name)


def airtime(ms: int | float | None) -> str:
    """Airtime in words, the one format of every page and print: '20 giây', '1 phút 5 giây',
    '15 phút', '2.5 giờ'. Whole seconds; a play of under a second is '1 giây', never nothing."""
    if ms is None:
        return "—"
    seconds = max(0, round(float(ms) / 1000))
    if ms > 0 and seconds == 0:
        seconds = 1
    if seconds >= 3600:
        return gettext("%(n).1f giờ", n=seconds / 3600)
    minutes, seconds = divmod(seconds, 60)
    if minutes and seconds:
        return gettext("%(m)d phút %(s)d giây", m=minutes, s=seconds)
    if minutes:
        return gettext("%(m)d phút", m=minutes)
    return gettext("%(s)d giây", s=seconds)


def late_join(offset_ms: int | None) -> str:
    """'Vào muộn 30 giây' for a play joined under way (``offset_ms`` > 0), else ''."""
    if not offset_ms or offset_ms <= 0:
        return ""
    return gettext("Vào muộn %(t)s", t=airtime(offset_ms))


def init_app(app: Flask) -> None:
    """Make ``label``, ``session_name``, ``airtime`` and ``late_join`` available to every template."""
    app.jinja_env.globals.update(label=label, session_name=session_name, airtime=airtime, late_join=late_join)
