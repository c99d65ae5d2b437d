"""The media cache against a real HTTP server: bearer token, sha256, resume with Range."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from receiver.cache import DownloadError, MediaCache

from rx_support import Media, MediaServer


def test_fetch_verifies_and_stores_by_sha(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    media_server.add(sine_mp3)
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        assert cache.path(sine_mp3.ref.sha256) is None
        path = cache.fetch(sine_mp3.ref)
        assert path == tmp_path / "media" / f"{sine_mp3.ref.sha256}.mp3"
        assert path.read_bytes() == sine_mp3.data
        assert cache.path(sine_mp3.ref.sha256) == path
        assert media_server.requests[-1]["auth"] == f"Bearer {media_server.token}"
        assert not list((tmp_path / "media" / "tmp").iterdir())
        # A second fetch is served from the cache.
        count = len(media_server.requests)
        assert cache.fetch(sine_mp3.ref) == path
        assert len(media_server.requests) == count
    finally:
        cache.close()
    reopened = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        assert reopened.path(sine_mp3.ref.sha256) == path
        assert reopened.count() == 1
    finally:
        reopened.close()


@pytest.mark.parametrize(("token", "status"), [("", 401), ("wrong", 403)])
def test_http_errors(tmp_path: Path, media_server: MediaServer, sine_mp3: Media, token: str, status: int) -> None:
    media_server.add(sine_mp3)
    cache = MediaCache(tmp_path / "media", media_server.url, token)  # "" sends no Authorization header
    try:
        with pytest.raises(DownloadError) as info:
            cache.fetch(sine_mp3.ref)
        assert info.value.code == "download.http"
        assert str(status) in str(info.value)
        assert cache.path(sine_mp3.ref.sha256) is None
    finally:
        cache.close()


def test_missing_file_is_an_http_error(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        with pytest.raises(DownloadError, match="404") as info:
            cache.fetch(sine_mp3.ref)
        assert info.value.code == "download.http"
    finally:
        cache.close()


def test_wrong_checksum_is_refused_and_deleted(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    media_server.files[sine_mp3.ref.path] = sine_mp3.data[:-10] + b"0123456789"
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        with pytest.raises(DownloadError) as info:
            cache.fetch(sine_mp3.ref)
        assert info.value.code == "download.checksum"
        assert cache.path(sine_mp3.ref.sha256) is None
        assert not list((tmp_path / "media").glob(f"{sine_mp3.ref.sha256}*"))
        assert not list((tmp_path / "media" / "tmp").iterdir())
    finally:
        cache.close()


def test_network_error(tmp_path: Path, sine_mp3: Media) -> None:
    from rx_support import free_port

    cache = MediaCache(tmp_path / "media", f"http://127.0.0.1:{free_port()}", "tok")
    try:
        with pytest.raises(DownloadError) as info:
            cache.fetch(sine_mp3.ref)
        assert info.value.code == "download.network"
    finally:
        cache.close()


def _leave_part(tmp_path: Path, media: Media, size: int) -> Path:
    part = tmp_path / "media" / "tmp" / f"{media.ref.sha256}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(media.data[:size])
    return part


def test_resume_with_range(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    media_server.add(sine_mp3)
    half = len(sine_mp3.data) // 2
    _leave_part(tmp_path, sine_mp3, half)
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        path = cache.fetch(sine_mp3.ref)
        assert path.read_bytes() == sine_mp3.data
        assert media_server.requests[-1]["range"] == f"bytes={half}-"
    finally:
        cache.close()


def test_server_ignoring_range_restarts(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    media_server.add(sine_mp3)
    media_server.honour_range = False
    _leave_part(tmp_path, sine_mp3, 1000)
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        assert cache.fetch(sine_mp3.ref).read_bytes() == sine_mp3.data
        assert media_server.requests[-1]["range"] == "bytes=1000-"
    finally:
        cache.close()


def test_corrupt_part_fails_then_succeeds(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    media_server.add(sine_mp3)
    part = _leave_part(tmp_path, sine_mp3, 0)
    part.write_bytes(b"garbage" * 100)
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        with pytest.raises(DownloadError) as info:
            cache.fetch(sine_mp3.ref)
        assert info.value.code == "download.checksum"
        assert not part.exists()
        assert cache.fetch(sine_mp3.ref).read_bytes() == sine_mp3.data  # the retry starts afresh
    finally:
        cache.close()


def test_complete_part_is_verified_on_416(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    media_server.add(sine_mp3)
    _leave_part(tmp_path, sine_mp3, len(sine_mp3.data))
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        assert cache.fetch(sine_mp3.ref).read_bytes() == sine_mp3.data
    finally:
        cache.close()


def test_format_is_sanitised(tmp_path: Path, media_server: MediaServer, sine_mp3: Media) -> None:
    media_server.add(sine_mp3)
    ref = dataclasses.replace(sine_mp3.ref, format="../x")
    cache = MediaCache(tmp_path / "media", media_server.url, media_server.token)
    try:
        assert cache.fetch(ref).name == f"{ref.sha256}.bin"
    finally:
        cache.close()
