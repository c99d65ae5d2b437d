"""What a receiver holds and why: its signed conf, one signed manifest per scope, their merged timeline.

:class:`Holdings` is the one implementation of the protocol's acceptance rules,
used by the real agent and by every simulated receiver:

- a conf must be genuine (signature, kind ``conf``, scope ``rx/<id>``), well
  formed and for this receiver; an older version is a rollback and refused
  (``conf.rollback``); the version already held is ignored;
- a manifest is looked at only on a scope the conf lists (or the receiver's
  own); it must be genuine and well formed; an older version is refused
  (``manifest.rollback``) and the held one kept.

Each offer returns a :class:`Verdict`: accepted, refused or ignored, with the
events to report (the caller sends them). A refused signature also raises the
``signature_refused`` fault: someone is sending forged or misdirected orders.

With a ``store`` directory the last good conf and manifests are kept on disk
(``conf.json``, ``manifests/<scope, url-quoted>.json``) and loaded at start, so
a receiver restarted with the broker down still plays; the simulator keeps
them in memory only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from receiver.cache import write_atomic
from receiver.files import private_dir
from receiver.verifier import Verifier
from schedules import events, topics
from schedules.conf import ConfError, ReceiverConf
from schedules.manifest import Item, Manifest, ManifestError, merge
from schedules.signing import SignatureError

logger = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
"""An event to report: its type and fields (for :func:`schedules.events.make_event`)."""


@dataclass(frozen=True)
class Verdict:
    """What became of one signed message."""

    outcome: Literal["accepted", "refused", "ignored"]
    events: tuple[Event, ...] = ()
    added: tuple[str, ...] = ()
    """Scopes a newly accepted conf follows that the previous one did not (subscribe to them)."""
    removed: tuple[str, ...] = ()
    """Scopes the previous conf followed and the new one does not (unsubscribe; their manifests are dropped)."""

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


IGNORED = Verdict("ignored")


def _signature_fault(kind: str, exc: SignatureError, **where: Any) -> Event:
    return events.FAULT_RAISED, {"fault": "signature_refused", "kind": kind, **where, "code": exc.code,
                                 "reason": str(exc)}


class Holdings:
    """The verified conf and manifests of one receiver (thread-safe)."""

    def __init__(self, rx: str, verifier: Verifier, store: Path | None = None,
                 fixed_scopes: list[str] | None = None) -> None:
        self.rx = rx
        self._verifier = verifier
        self._store = store
        self._fixed_scopes = list(fixed_scopes or [])
        self._lock = threading.RLock()
        self._conf: ReceiverConf | None = None
        self._manifests: dict[str, Manifest] = {}
        self.generation = 0
        """Bumped whenever what is held changes (the player and the timeline cache look at it)."""
        self._timeline: tuple[int, list[tuple[str, Item]]] = (-1, [])
        self._followed = frozenset(self.scopes())
        if store is not None:
            private_dir(store)
            private_dir(store / "manifests")
            self._load()

    # ----------------------------------------------------------------- views

    @property
    def conf(self) -> ReceiverConf | None:
        """The configuration in force (None until the first valid one)."""
        with self._lock:
            return self._conf

    @property
    def manifests(self) -> dict[str, Manifest]:
        """The manifest held for each scope."""
        with self._lock:
            return dict(self._manifests)

    def versions(self) -> dict[str, int]:
        """The version held for each scope (as the heartbeat reports them)."""
        with self._lock:
            return {scope: m.version for scope, m in self._manifests.items()}

    def scopes(self) -> list[str]:
        """The scopes followed, widest first (the conf's, else the fixed ones); its own ``rx/<id>`` is last."""
        with self._lock:
            scopes = list(self._conf.scopes) if self._conf is not None else list(self._fixed_scopes)
        own = topics.rx_scope(self.rx)
        if own not in scopes:
            scopes.append(own)
        return scopes

    def follows(self, scope: str) -> bool:
        """Whether ``scope`` is one of :meth:`scopes` (asked for every message: kept as a set)."""
        return scope in self._followed

    def timeline(self) -> list[tuple[str, Item]]:
        """The merged timeline of every held manifest, ``[(scope, item)]`` by start (cached per generation)."""
        with self._lock:
            generation = self.generation
            if self._timeline[0] == generation:
                return self._timeline[1]
            scopes = self.scopes()
            held = [(width, self._manifests[s]) for width, s in enumerate(scopes) if s in self._manifests]
        merged, conflicts = merge(held, rx_id=self.rx)  # items that exclude this receiver are left out
        for c in conflicts:
            logger.info("rx %s: item %s of %s at %d loses to %s of %s: %s", self.rx, c.loser.id, c.loser_scope,
                        c.loser.start_ms, c.winner.id, c.winner_scope, c.reason)
        with self._lock:
            self._timeline = (generation, merged)
        return merged

    # ---------------------------------------------------------------- offers

    def offer_conf(self, payload: bytes) -> Verdict:
        """Accept a conf message, or say why not."""
        try:
            checked = self._verifier.check(payload, "conf", topics.rx_scope(self.rx))
        except SignatureError as exc:
            logger.warning("rx %s: refused conf: %s (%s)", self.rx, exc, exc.code)
            fault = "signature_refused" if exc.code.startswith("sig.") else "conf_refused"
            return Verdict("refused", ((events.FAULT_RAISED, {"fault": fault, "kind": "conf", "code": exc.code,
                                                              "reason": str(exc)}),))
        conf = checked.record
        error = checked.error
        if error is None and isinstance(conf, ReceiverConf) and conf.rx != self.rx:
            error = ConfError(f"conf is for receiver {conf.rx!r}")
        if error is not None or not isinstance(conf, ReceiverConf):
            logger.warning("rx %s: refused conf: %s", self.rx, error)
            return Verdict("refused", ((events.FAULT_RAISED, {"fault": "conf_refused", "kind": "conf",
                                                              "code": "conf.malformed", "reason": str(error)}),))
        with self._lock:
            held = self._conf
            if held is not None and conf.version < held.version:
                reason = f"conf version {conf.version} is older than the held version {held.version}"
                logger.warning("rx %s: refused conf: %s", self.rx, reason)
                return Verdict("refused", ((events.FAULT_RAISED, {"fault": "conf_refused", "kind": "conf",
                                                                  "code": "conf.rollback", "reason": reason}),))
            if held is not None and conf.version == held.version:
                logger.debug("rx %s: conf v%d already held", self.rx, conf.version)
                return IGNORED
            old_scopes = self.scopes()
            self._conf = conf
            new_scopes = self.scopes()
            self._followed = frozenset(new_scopes)
            removed = tuple(s for s in old_scopes if s not in new_scopes)
            added = tuple(s for s in new_scopes if s not in old_scopes)
            for scope in removed:
                self._manifests.pop(scope, None)
            self.generation += 1
        if self._store is not None:
            try:
                write_atomic(self._store / "conf.json", payload)
            except OSError as exc:
                logger.error("rx %s: cannot store conf: %s", self.rx, exc)
            for scope in removed:
                self._manifest_path(scope).unlink(missing_ok=True)
            for scope in added:
                self._load_manifest(scope)
        logger.info("rx %s: conf v%d accepted; scopes %s", self.rx, conf.version, conf.scopes)
        accepted = (events.CONF_ACCEPTED, {"version": conf.version, "scopes": conf.scopes, "volume": conf.volume})
        return Verdict("accepted", (accepted,), added=added, removed=removed)

    def offer_manifest(self, scope: str, payload: bytes) -> Verdict:
        """Accept a manifest message for ``scope``, or say why not."""
        if not self.follows(scope):
            logger.debug("rx %s: ignoring manifest for %s, not one of its scopes", self.rx, scope)
            return IGNORED
        try:
            checked = self._verifier.check(payload, "manifest", scope)
        except SignatureError as exc:
            return self._refuse_manifest(scope, exc.code, str(exc),
                                         _signature_fault("manifest", exc, scope=scope)
                                         if exc.code.startswith("sig.") else None)
        manifest = checked.record
        if checked.error is not None or not isinstance(manifest, Manifest):
            return self._refuse_manifest(scope, "manifest.malformed", str(checked.error))
        with self._lock:
            held = self._manifests.get(scope)
            if held is not None and manifest.version == held.version:
                logger.debug("rx %s: manifest %s v%d already held", self.rx, scope, manifest.version)
                return IGNORED
            if held is not None and manifest.version < held.version:
                return self._refuse_manifest(
                    scope, "manifest.rollback", f"version {manifest.version} is older than the held version "
                                                f"{held.version}")
        if self._store is not None:
            try:
                write_atomic(self._manifest_path(scope), payload)
            except OSError as exc:
                logger.error("rx %s: cannot store manifest %s: %s", self.rx, scope, exc)
        with self._lock:
            self._manifests[scope] = manifest
            self.generation += 1
        return Verdict("accepted", ((events.MANIFEST_ACCEPTED, {
            "scope": scope, "version": manifest.version, "items": len(manifest.items),
            "content_hash": checked.content_hash}),))

    def _refuse_manifest(self, scope: str, code: str, reason: str, fault: Event | None = None) -> Verdict:
        held = self.manifests.get(scope)
        logger.warning("rx %s: refused manifest for %s: %s (%s); %s", self.rx, scope, reason, code,
                       f"keeping v{held.version}" if held else "none held")
        refused: Event = (events.MANIFEST_REFUSED, {"scope": scope, "code": code, "reason": reason,
                                                    "held_version": held.version if held else None})
        return Verdict("refused", (refused, fault) if fault is not None else (refused,))

    # ----------------------------------------------------------------- store

    def _manifest_path(self, scope: str) -> Path:
        assert self._store is not None
        return self._store / "manifests" / f"{quote(scope, safe='')}.json"

    def _load(self) -> None:
        assert self._store is not None
        conf_path = self._store / "conf.json"
        if conf_path.exists():
            try:
                checked = self._verifier.check(conf_path.read_bytes(), "conf", topics.rx_scope(self.rx))
                if checked.error is not None:
                    raise checked.error
                assert isinstance(checked.record, ReceiverConf)
                self._conf = checked.record
                self._followed = frozenset(self.scopes())
                logger.info("rx %s: loaded conf v%d (scopes %s)", self.rx, self._conf.version, self._conf.scopes)
            except (OSError, SignatureError, ConfError) as exc:
                logger.warning("rx %s: ignoring stored conf %s: %s", self.rx, conf_path, exc)
        for scope in self.scopes():
            self._load_manifest(scope)

    def _load_manifest(self, scope: str) -> None:
        path = self._manifest_path(scope)
        if not path.exists():
            return
        try:
            checked = self._verifier.check(path.read_bytes(), "manifest", scope)
            if checked.error is not None:
                raise checked.error
            manifest = checked.record
            assert isinstance(manifest, Manifest)
        except (OSError, SignatureError, ManifestError) as exc:
            logger.warning("rx %s: ignoring stored manifest %s: %s", self.rx, path, exc)
            return
        with self._lock:
            self._manifests[scope] = manifest
            self.generation += 1
        logger.info("rx %s: loaded manifest %s v%d (%d items)", self.rx, scope, manifest.version, len(manifest.items))
