"""Signed envelopes: forgery, tampering and misdirection are refused."""

from __future__ import annotations

import json

import pytest

from schedules import signing
from schedules.manifest import Item, Manifest, MediaRef


def _manifest(version: int = 3, scope: str = "area/qd/phu") -> Manifest:
    media = MediaRef(sha256="a" * 64, path="/media/" + "a" * 64 + ".mp3", bytes=1000, duration_ms=5000)
    return Manifest(scope=scope, version=version, generated_ms=1, window_start_ms=1, window_end_ms=2,
                    items=[Item("pi-1", "Bản tin", 1_000_000, 5000, "normal", media)])


@pytest.fixture(scope="module")
def key():
    return signing.generate_private_key()


def test_round_trip(key):
    payload = signing.sign(key, _manifest().to_body())
    body = signing.verify(key.public_key(), payload, kind="manifest", scope="area/qd/phu")
    assert Manifest.from_body(body).items[0].title == "Bản tin"


def test_tampered_manifest_is_refused(key):
    envelope = json.loads(signing.sign(key, _manifest().to_body()))
    envelope["body"]["items"][0]["start_ms"] += 1000  # someone moves the bulletin by a second
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(key.public_key(), json.dumps(envelope).encode(), kind="manifest", scope="area/qd/phu")
    assert err.value.code == "sig.invalid"


def test_other_key_is_refused(key):
    payload = signing.sign(signing.generate_private_key(), _manifest().to_body())
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(key.public_key(), payload, kind="manifest", scope="area/qd/phu")
    assert err.value.code == "sig.invalid"


def test_manifest_for_another_commune_is_refused(key):
    payload = signing.sign(key, _manifest(scope="area/qd/an").to_body())
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(key.public_key(), payload, kind="manifest", scope="area/qd/phu")
    assert err.value.code == "sig.wrong_scope"


def test_manifest_replayed_as_command_is_refused(key):
    payload = signing.sign(key, _manifest().to_body())
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(key.public_key(), payload, kind="cmd", scope="area/qd/phu")
    assert err.value.code == "sig.wrong_kind"


@pytest.mark.parametrize(("payload", "code"), [
    (b"\xff\xfe", "msg.not_json"),
    (b"[1,2]", "msg.malformed"),
    (b'{"v":2,"body":{},"sig":""}', "msg.version"),
    (b'{"v":1,"body":{},"sig":"***"}', "sig.malformed"),
    (b"x" * (signing.MAX_MESSAGE_BYTES + 1), "msg.too_large"),
])
def test_garbage_is_refused_with_a_code(key, payload, code):
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(key.public_key(), payload, kind="manifest", scope="area/qd/phu")
    assert err.value.code == code


def test_public_key_text_round_trip(key):
    text = signing.public_key_to_text(key.public_key())
    assert signing.public_key_to_text(signing.public_key_from_text(text)) == text
    with pytest.raises(ValueError):
        signing.public_key_from_text("not-a-key")
