"""The media cache: content-addressed files fetched over HTTP and verified by sha256.

Downloads stream into ``<dir>/tmp/<sha>.part`` (resumed with a ``Range`` request
when a part exists), are checked against the sha256 the signed manifest names,
fsynced, and only then renamed to ``<dir>/<sha>.<format>``: a file under its
final name is always complete and verified. This is the only module of the
receiver that imports ``requests``.

The cache is bounded: before a download, :meth:`MediaCache.make_room` evicts
the least recently used files (by mtime, which :meth:`MediaCache.touch` bumps
when a file plays, so the order survives restarts) but never one the caller
names as still scheduled. A download that would leave less than
``reserve_bytes`` free on the disk is not started (``download.disk_full``), and
one that hits ENOSPC deletes its part file: the agent keeps playing what it has.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import requests

from receiver.files import open_private, private_dir
from schedules.manifest import MediaRef

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FORMAT = re.compile(r"^[a-z0-9]{1,8}$")


class DownloadError(Exception):
    """A media file could not be fetched; ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.args[0]}"


class DownloadCancelled(Exception):
    """The caller asked a running download to stop; the part file is kept for resuming."""


class MediaCache:
    """Verified media files under one directory, named by their sha256.

    Downloads send ``Authorization: Bearer <token>`` (no header for an empty token).
    """

    def __init__(
        self,
        directory: str | Path,
        base_url: str,
        token: str,
        *,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        max_bytes: int | None = None,
        reserve_bytes: int = 0,
        disk_free: Callable[[], int] | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.tmp_dir = self.dir / "tmp"
        private_dir(self.dir)
        private_dir(self.tmp_dir)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self._disk_free = disk_free or (lambda: shutil.disk_usage(self.dir).free)
        self._lock = threading.Lock()
        self._fetch_locks: dict[str, threading.Lock] = {}
        self._index: dict[str, Path] = {}
        self._session: requests.Session | None = None
        for entry in self.dir.iterdir():
            sha = entry.name.split(".", 1)[0]
            if entry.is_file() and _SHA256.match(sha):
                self._index[sha] = entry

    def path(self, sha256: str) -> Path | None:
        """The cached, verified file with this sha256, or None."""
        with self._lock:
            found = self._index.get(sha256)
        if found is not None and found.is_file():
            return found
        if found is not None:
            with self._lock:
                self._index.pop(sha256, None)
        return None

    def size(self) -> int:
        """Bytes held by verified files."""
        with self._lock:
            paths = list(self._index.values())
        return sum(_size(p) for p in paths)

    def touch(self, sha256: str) -> None:
        """Mark a file as just used (its mtime), for least-recently-used eviction."""
        found = self.path(sha256)
        if found is not None:
            try:
                os.utime(found)
            except OSError:
                pass

    def make_room(self, incoming: int, keep: set[str]) -> list[str]:
        """Evict least recently used files, never those in ``keep``, so ``incoming`` more bytes fit.

        Returns the evicted sha256s. When only kept files remain the bound is
        exceeded (scheduled media matter more than the bound) and a warning logged.
        """
        if self.max_bytes is None:
            return []
        with self._lock:
            entries = list(self._index.items())
        sized = sorted(((_mtime(p), sha, p, _size(p)) for sha, p in entries), key=lambda e: e[0])
        total = sum(e[3] for e in sized)
        evicted: list[str] = []
        for _, sha, path, size in sized:
            if total + incoming <= self.max_bytes:
                break
            if sha in keep:
                continue
            path.unlink(missing_ok=True)
            with self._lock:
                self._index.pop(sha, None)
            total -= size
            evicted.append(sha)
            logger.info("media %s: evicted (least recently used, %d bytes)", sha, size)
        if total + incoming > self.max_bytes:
            logger.warning(
                "media cache over its bound: %d bytes held + %d incoming > %d (all scheduled)",
                total,
                incoming,
                self.max_bytes,
            )
        return evicted

    def count(self) -> int:
        """How many verified files the cache holds."""
        with self._lock:
            return len(self._index)

    def final_path(self, media: MediaRef) -> Path:
        """Where a verified copy of ``media`` lives once fetched."""
        fmt = media.format.lower() if _FORMAT.match(media.format.lower()) else "bin"
        return self.dir / f"{media.sha256}.{fmt}"

    def _http(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = requests.Session()
                if self._token:
                    self._session.headers["Authorization"] = f"Bearer {self._token}"
                self._session.headers["User-Agent"] = "loaxa-receiver"
            return self._session

    def fetch(self, media: MediaRef, should_stop: Callable[[], bool] | None = None) -> Path:
        """Download, verify and store ``media``; returns its path or raises DownloadError."""
        if not _SHA256.match(media.sha256):
            raise DownloadError("download.checksum", f"{media.sha256!r} is not a sha256")
        with self._lock:
            fetch_lock = self._fetch_locks.setdefault(media.sha256, threading.Lock())
        with fetch_lock:
            cached = self.path(media.sha256)
            if cached is not None:
                return cached
            return self._download(media, should_stop)

    def _download(self, media: MediaRef, should_stop: Callable[[], bool] | None) -> Path:
        url = self.base_url + media.path
        part = self.tmp_dir / f"{media.sha256}.part"
        offset = part.stat().st_size if part.exists() else 0
        try:
            free = self._disk_free()
        except OSError:
            free = None
        if free is not None and free - max(0, media.bytes - offset) < self.reserve_bytes:
            raise DownloadError(
                "download.disk_full",
                f"{free} bytes free: {media.bytes - offset} more would pass the reserve of {self.reserve_bytes}",
            )
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._http().get(url, headers=headers, stream=True, timeout=self.timeout) as resp:
                status = resp.status_code
                if offset and status == 416:
                    # The part is already complete (or too long): verify it as it stands.
                    logger.info("media %s: server refused range %d-, verifying the part file", media.sha256, offset)
                elif offset and status == 206 and _range_start(resp) == offset:
                    logger.info("media %s: resuming download at byte %d", media.sha256, offset)
                    self._stream(resp, part, "ab", should_stop)
                elif status == 200 or (status == 206 and _range_start(resp) in (0, None) and not offset):
                    if offset:
                        logger.info("media %s: server ignored the range, downloading again", media.sha256)
                    self._stream(resp, part, "wb", should_stop)
                else:
                    reason = f" {resp.reason}" if resp.reason else ""
                    raise DownloadError("download.http", f"HTTP {status}{reason} for {url}")
        except requests.RequestException as exc:
            raise DownloadError("download.network", f"{type(exc).__name__} fetching {url}: {exc}") from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                part.unlink(missing_ok=True)  # give the space back to what plays
                raise DownloadError("download.disk_full", f"disk full writing {part}") from exc
            raise DownloadError("download.disk", f"cannot write {part}: {exc}") from exc
        return self._commit(media, part)

    def _stream(
        self,
        resp: requests.Response,
        part: Path,
        mode: str,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        with open_private(part, mode) as fh:
            for chunk in resp.iter_content(CHUNK_BYTES):
                if should_stop is not None and should_stop():
                    raise DownloadCancelled(f"download of {part.name} cancelled")
                if chunk:
                    fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())

    def _commit(self, media: MediaRef, part: Path) -> Path:
        digest = hashlib.sha256()
        with part.open("rb") as fh:
            for block in iter(lambda: fh.read(1024 * 1024), b""):
                digest.update(block)
        if digest.hexdigest() != media.sha256:
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            raise DownloadError(
                "download.checksum",
                f"{media.path}: got sha256 {digest.hexdigest()} ({size} bytes), expected {media.sha256}",
            )
        final = self.final_path(media)
        try:
            os.replace(part, final)
        except OSError as exc:
            raise DownloadError("download.disk", f"cannot store {final}: {exc}") from exc
        _fsync_dir(self.dir)
        with self._lock:
            self._index[media.sha256] = final
        logger.info("media %s: cached as %s", media.sha256, final.name)
        return final

    def close(self) -> None:
        """Release the HTTP connection pool."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _range_start(resp: requests.Response) -> int | None:
    """The first byte of a 206 response (``Content-Range: bytes a-b/n``), or None."""
    match = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) so that a power cut leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
