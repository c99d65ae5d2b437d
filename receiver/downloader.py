"""The downloader: every media file the held manifests (and a waiting emergency) name, soonest first.

A failed download is retried with exponential backoff (5 s doubling to 5 min)
and raises one fault (``download_failed``, ``checksum_mismatch`` or
``disk_full``) that is cleared when the file arrives; a full disk is cleared
for every file as soon as any download succeeds again. Room is made by
evicting cached files no held manifest needs (:meth:`MediaCache.make_room`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from receiver.cache import DownloadCancelled, DownloadError, MediaCache
from receiver.gate import Orders
from receiver.holdings import Holdings
from receiver.reporter import Reporter
from schedules import events
from schedules.events import now_ms
from schedules.manifest import MediaRef

logger = logging.getLogger(__name__)

RETRY_MIN_S = 5.0
RETRY_MAX_S = 300.0
IDLE_WAIT_S = 60.0


@dataclass
class _Failure:
    attempts: int = 0
    retry_at: float = 0.0
    raised: bool = False
    code: str = ""


def download_fault(code: str) -> str:
    """The fault a failed download raises: a full disk, a bad checksum, or any other failure."""
    return {"download.disk_full": "disk_full", "download.checksum": "checksum_mismatch"}.get(code, "download_failed")


class Downloader:
    """Keeps the cache holding what will play (runs in its own thread: :meth:`run`)."""

    def __init__(self, rx: str, cache: MediaCache, holdings: Holdings, orders: Orders, reporter: Reporter,
                 stop: threading.Event, on_fetched: Callable[[], None]) -> None:
        self.rx = rx
        self.cache = cache
        self._holdings = holdings
        self._orders = orders
        self._reporter = reporter
        self._stop = stop
        self._on_fetched = on_fetched
        self.wake = threading.Event()
        """Set it to look again now (a new manifest, an emergency, a file missing at its start)."""
        self._failures: dict[str, _Failure] = {}

    def wanted(self) -> list[MediaRef]:
        """The media still needed: a waiting emergency's first, then every item not yet ended by its start."""
        now = now_ms()
        items = [i for m in self._holdings.manifests.values() for i in m.items if i.end_ms > now]
        wanted: dict[str, MediaRef] = {}
        emergency = self._orders.emergency
        if emergency is not None and emergency.media is not None:
            wanted[emergency.media.sha256] = emergency.media
        for item in sorted(items, key=lambda i: i.start_ms):
            if item.media is not None:  # a silence separator, or a relay without fallback, needs no file
                wanted.setdefault(item.media.sha256, item.media)
        return list(wanted.values())

    def run(self) -> None:
        """The downloader thread's loop, until the agent stops."""
        while not self._stop.is_set():
            self.wake.clear()
            try:
                wait_s = self.step()
            except Exception:
                logger.exception("rx %s: downloader error", self.rx)
                wait_s = RETRY_MIN_S
            if wait_s > 0:
                self.wake.wait(wait_s)

    def step(self) -> float:
        """Fetch the first missing file not waiting for a retry; returns how long to wait before looking again."""
        now = time.monotonic()
        next_retry: float | None = None
        for ref in self.wanted():
            if self._stop.is_set():
                return 0.0
            if self.cache.path(ref.sha256) is not None:
                continue
            failure = self._failures.get(ref.sha256)
            if failure is not None and failure.retry_at > now:
                next_retry = failure.retry_at if next_retry is None else min(next_retry, failure.retry_at)
                continue
            self._download(ref)
            return 0.0
        return IDLE_WAIT_S if next_retry is None else max(0.05, min(next_retry - now, IDLE_WAIT_S))

    def _download(self, ref: MediaRef) -> None:
        try:
            self.cache.make_room(ref.bytes, keep={m.sha256 for m in self.wanted()})
            self.cache.fetch(ref, should_stop=self._stop.is_set)
        except DownloadCancelled:
            return
        except Exception as exc:  # DownloadError, or anything unexpected: retry later either way
            self._failed(ref, exc)
            return
        cleared = self._failures.pop(ref.sha256, None)
        if cleared is not None and cleared.raised:
            self._reporter.emit(events.FAULT_CLEARED, fault=download_fault(cleared.code), sha256=ref.sha256,
                                path=ref.path)
        for sha, failure in list(self._failures.items()):
            if failure.raised and failure.code == "download.disk_full":  # space is back
                del self._failures[sha]
                self._reporter.emit(events.FAULT_CLEARED, fault="disk_full", sha256=sha)
        self._on_fetched()

    def _failed(self, ref: MediaRef, exc: Exception) -> None:
        code = exc.code if isinstance(exc, DownloadError) else "download.error"
        reason = exc.args[0] if isinstance(exc, DownloadError) else f"{type(exc).__name__}: {exc}"
        failure = self._failures.setdefault(ref.sha256, _Failure())
        failure.attempts += 1
        failure.code = code
        delay = min(RETRY_MIN_S * 2 ** (failure.attempts - 1), RETRY_MAX_S)
        failure.retry_at = time.monotonic() + delay
        logger.warning("rx %s: download of %s failed (attempt %d): %s %s; retrying in %.0f s", self.rx, ref.path,
                       failure.attempts, code, reason, delay)
        if not failure.raised:
            failure.raised = True
            self._reporter.emit(events.FAULT_RAISED, fault=download_fault(code), sha256=ref.sha256, path=ref.path,
                                code=code, reason=reason)
