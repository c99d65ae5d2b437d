"""The cache's size bound (least recently used out, scheduled media never) and a full disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from receiver.cache import DownloadError, MediaCache
from schedules.manifest import MediaRef

from rx_support import Media, MediaServer


def _media(server: MediaServer, n: int, size: int = 10_000) -> MediaRef:
    data = bytes([n]) * size
    sha = hashlib.sha256(data).hexdigest()
    ref = MediaRef(sha256=sha, path=f"/media/{sha}.mp3", bytes=size, duration_ms=1000)
    server.files[ref.path] = data
    return ref


def test_lru_eviction_never_takes_scheduled_media(tmp_path: Path, media_server: MediaServer) -> None:
    refs = [_media(media_server, n) for n in range(4)]
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token, max_bytes=25_000)
    try:
        for age, ref in enumerate(refs[:2]):
            path = cache.fetch(ref)
            os.utime(path, (1_000_000 + age, 1_000_000 + age))  # refs[0] is the least recently used
        cache.touch(refs[0].sha256)  # ... until it plays again
        assert cache.make_room(refs[2].bytes, keep=set()) == [refs[1].sha256]
        cache.fetch(refs[2])
        # Everything held is still scheduled: nothing is evicted, the bound gives way.
        assert cache.make_room(refs[3].bytes, keep={refs[0].sha256, refs[2].sha256}) == []
        cache.fetch(refs[3])
        assert cache.count() == 3 and cache.size() == 30_000
        assert cache.make_room(0, keep={refs[2].sha256, refs[3].sha256}) == [refs[0].sha256]
        assert cache.path(refs[0].sha256) is None and not list((tmp_path / "media").glob(f"{refs[0].sha256}*"))
    finally:
        cache.close()


def test_full_disk_refuses_new_downloads_and_keeps_what_it_has(
    tmp_path: Path, media_server: MediaServer, sine_mp3: Media
) -> None:
    media_server.add(sine_mp3)
    free = {"bytes": 10**9}
    cache = MediaCache(
        tmp_path / "media",
        media_server.url,
        media_server.token,
        reserve_bytes=1_000_000,
        disk_free=lambda: free["bytes"],
    )
    try:
        held = cache.fetch(sine_mp3.ref)
        other = _media(media_server, 9)
        free["bytes"] = 1_000_000 + other.bytes - 1
        count = len(media_server.requests)
        with pytest.raises(DownloadError) as caught:
            cache.fetch(other)
        assert caught.value.code == "download.disk_full"
        assert len(media_server.requests) == count  # not even started
        assert cache.path(sine_mp3.ref.sha256) == held and held.read_bytes() == sine_mp3.data
        assert not list((tmp_path / "media" / "tmp").iterdir())
        free["bytes"] = 10**9
        assert cache.fetch(other).read_bytes() == media_server.files[other.path]
    finally:
        cache.close()
