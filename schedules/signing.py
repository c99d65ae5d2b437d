"""Ed25519 signing of manifests, configurations and commands.

A signed message is the envelope ``{"v": 1, "body": {...}, "sig": "<base64>"}``
where ``sig`` signs the canonical JSON of ``body`` (sorted keys, no spaces,
UTF-8). The body names its ``kind`` and ``scope`` so a receiver can check them
against the topic the message arrived on.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from schedules.topics import PROTOCOL_VERSION

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class SignatureError(Exception):
    """A signed message is malformed, forged, or not meant for where it arrived."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def canonical_json(obj: Any) -> bytes:
    """The one byte representation that is signed and verified."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the file's mode protects it)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """Load a PEM private key written by :func:`private_key_to_pem`."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("signing key is not an Ed25519 key")
    return key


def public_key_to_text(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as base64: short enough for a config file."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_key_to_text`."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a base64 Ed25519 public key: {exc}") from exc


def sign(key: Ed25519PrivateKey, body: dict[str, Any]) -> bytes:
    """Wrap ``body`` in a signed envelope and return its wire bytes."""
    if "kind" not in body or "scope" not in body:
        raise ValueError("a signed body must name its kind and scope")
    sig = key.sign(canonical_json(body))
    envelope = {"v": PROTOCOL_VERSION, "body": body, "sig": base64.b64encode(sig).decode("ascii")}
    return canonical_json(envelope)


def verify(
    public_key: Ed25519PublicKey,
    payload: bytes,
    *,
    kind: str,
    scope: str,
) -> dict[str, Any]:
    """Check an envelope and return its body.

    Raises :class:`SignatureError` with a stable code when the payload is too
    large, not JSON, of another protocol version, badly signed, or of another
    kind or scope than the topic it arrived on.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise SignatureError("msg.too_large", f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignatureError("msg.not_json", f"payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), dict):
        raise SignatureError("msg.malformed", "envelope has no body object")
    if envelope.get("v") != PROTOCOL_VERSION:
        raise SignatureError("msg.version", f"unsupported protocol version {envelope.get('v')!r}")
    try:
        sig = base64.b64decode(str(envelope.get("sig", "")), validate=True)
    except ValueError as exc:
        raise SignatureError("sig.malformed", "signature is not base64") from exc
    body: dict[str, Any] = envelope["body"]
    try:
        public_key.verify(sig, canonical_json(body))
    except InvalidSignature as exc:
        raise SignatureError("sig.invalid", "signature does not verify with the controller's key") from exc
    if body.get("kind") != kind:
        raise SignatureError("sig.wrong_kind", f"signed {body.get('kind')!r} arrived where {kind!r} belongs")
    if body.get("scope") != scope:
        raise SignatureError("sig.wrong_scope", f"signed for scope {body.get('scope')!r}, arrived on {scope!r}")
    return body
