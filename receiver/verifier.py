"""Signed messages checked and parsed, for the real agent and the simulator's receivers alike.

A payload is first verified (:func:`receiver.untrusted.verify`: signature, kind,
scope; only :class:`~schedules.signing.SignatureError` escapes), then its body is
parsed into the record its kind names (an ``alert`` state into the alert
command it carries). A body that is signed but malformed is
kept beside its parse error, so that a refusal can still name the command's
``action`` and ``nonce``.

The simulator gives all its receivers one :class:`Verifier` with a cache: the
same retained manifest reaches all of them, and the same payload gets the same
answer (the parsed records are immutable in use and shared). The real agent
uses no cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from receiver.untrusted import verify
from schedules.commands import Command, CommandError, command_of_alert
from schedules.conf import ConfError, ReceiverConf
from schedules.manifest import Manifest, ManifestError
from schedules.signing import SignatureError, public_key_from_text


@dataclass(frozen=True)
class Checked:
    """One payload after the signature check: its body, and its record or why it is malformed."""

    body: dict[str, Any]
    record: Manifest | ReceiverConf | Command | None
    error: ManifestError | ConfError | CommandError | None
    content_hash: str = ""
    """For a manifest: :meth:`Manifest.content_hash`, computed once per payload."""


def _parse(kind: str, body: dict[str, Any]) -> Checked:
    try:
        if kind == "manifest":
            manifest = Manifest.from_body(body)
            return Checked(body, manifest, None, manifest.content_hash())
        if kind == "conf":
            return Checked(body, ReceiverConf.from_body(body), None)
        if kind == "alert":
            return Checked(body, command_of_alert(body), None)
        return Checked(body, Command.from_body(body), None)
    except (ManifestError, ConfError, CommandError) as exc:
        return Checked(body, None, exc)


class Verifier:
    """Verify and parse signed payloads with the controller's public key."""

    def __init__(self, public_key_text: str, cache_size: int = 0) -> None:
        self.key = public_key_from_text(public_key_text)
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[bytes, str, str], Checked | SignatureError] = OrderedDict()

    def check(self, payload: bytes, kind: str, scope: str) -> Checked:
        """The checked payload; raises :class:`SignatureError` when it is not genuine for ``kind`` and ``scope``."""
        if self._cache_size <= 0:
            return _parse(kind, verify(self.key, payload, kind=kind, scope=scope))
        key = (hashlib.sha256(payload).digest(), kind, scope)
        found = self._cache.get(key)
        if found is None:
            try:
                found = _parse(kind, verify(self.key, payload, kind=kind, scope=scope))
            except SignatureError as exc:
                found = exc
            self._cache[key] = found
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        if isinstance(found, SignatureError):
            # A fresh exception: re-raising one instance would keep growing its traceback.
            raise SignatureError(found.code, str(found))
        return found
