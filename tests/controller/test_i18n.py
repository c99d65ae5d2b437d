"""Vietnamese by default, English on request, and no untranslated English string."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]


def test_vietnamese_by_default_and_english_on_request(district, client):
    page = client.get("/login").text
    assert 'lang="vi"' in page and "Mật khẩu" in page
    client.get("/lang/en?next=/login")
    page = client.get("/login").text
    assert 'lang="en"' in page and "Password" in page and "Mật khẩu" not in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    wrong = client.post("/login", data={"username": "admin", "password": "x", "csrf_token": csrf})
    assert "Wrong username or password." in wrong.text
    assert client.get("/lang/xx").status_code == 302 and 'lang="en"' in client.get("/login").text
    assert client.get("/lang/vi?next=//evil.example").headers["Location"] == "/"


def test_every_message_has_an_english_translation():
    with open(ROOT / "controller/translations/en/LC_MESSAGES/messages.po", "rb") as fh:
        catalog = read_po(fh)
    translated = {m.id for m in catalog if m.id and m.string}
    method_map = [("controller/templates/**.html", "jinja2"), ("controller/**.py", "python")]
    keywords = {"_": None, "gettext": None, "N_": None}
    found = {msg[2] for msg in extract_from_dir(str(ROOT), method_map=method_map, keywords=keywords)}
    assert found - translated == set(), "run pybabel extract/update (see README) and translate these"
