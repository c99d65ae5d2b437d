"""Signed messages from the broker, verified so that no input can raise anything but a refusal.

:func:`schedules.signing.verify` maps what it expects of a bad payload to
:class:`~schedules.signing.SignatureError`; a few payloads still escape it: JSON
nested deeper than the parser's recursion limit (``[[[[...``, ``RecursionError``)
and strings holding a lone surrogate (``"\\ud800"`` parses, then cannot be encoded
to UTF-8 to check the signature: ``UnicodeEncodeError``). Both are refused here
with the code ``msg.malformed``, as any other malformed envelope, so the agent
reports ``manifest.refused`` / ``command.refused`` instead of logging a traceback.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schedules import signing
from schedules.signing import SignatureError

MALFORMED = "msg.malformed"


def verify(public_key: Ed25519PublicKey, payload: bytes, *, kind: str, scope: str) -> dict[str, Any]:
    """The verified body of ``payload``; raises only :class:`SignatureError`."""
    try:
        return signing.verify(public_key, payload, kind=kind, scope=scope)
    except RecursionError as exc:
        raise SignatureError(MALFORMED, f"{kind} payload of {len(payload)} bytes is nested too deeply") from exc
    except UnicodeError as exc:  # a lone surrogate: parsed, but not text that UTF-8 can carry
        raise SignatureError(MALFORMED, f"{kind} payload holds a string that is not valid Unicode") from exc

