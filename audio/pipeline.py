"""Turn an uploaded file into a content-addressed distribution file.

Foundation version: probe, validate, transcode to mono MP3 48 kbps, name by
sha256. Loudness normalisation arrives with the audio pipeline issue.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from audio import ffmpeg
from audio.errors import AudioError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A distribution file in the media store."""

    sha256: str
    path: Path
    bytes: int
    duration_ms: int
    format: str
    source_codec: str | None
    source_duration_s: float | None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate(path: Path, *, max_duration_s: float) -> ffmpeg.ProbeResult:
    """Probe ``path`` and refuse what cannot become a bulletin."""
    if path.stat().st_size == 0:
        raise AudioError("audio.empty", "the uploaded file is empty", "Tệp tải lên rỗng.")
    info = ffmpeg.probe(path)
    if not info.has_audio:
        raise AudioError("audio.no_stream", "the file has no audio stream", "Tệp không có âm thanh.")
    if info.duration_s is not None and info.duration_s <= 0:
        raise AudioError("audio.zero_duration", "the audio lasts zero seconds", "Âm thanh có độ dài bằng 0.")
    if info.duration_s is not None and info.duration_s > max_duration_s:
        raise AudioError("audio.too_long",
                         f"the audio lasts {info.duration_s:.0f}s, over the {max_duration_s:.0f}s limit",
                         f"Âm thanh dài quá giới hạn {max_duration_s / 60:.0f} phút.")
    return info


def prepare(src: Path, store: Path, *, max_duration_s: float = 3 * 3600, bitrate: str = "48k") -> Prepared:
    """Validate, transcode and store ``src``; identical content is stored once.

    The output is written to a temporary file in the store, measured, and
    renamed to ``<sha256>.mp3`` only when complete.
    """
    info = validate(src, max_duration_s=max_duration_s)
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", suffix=".mp3", dir=store)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        ffmpeg.transcode_mono_mp3(src, tmp, bitrate=bitrate, max_duration_s=max_duration_s)
        duration = ffmpeg.decoded_duration(tmp)
        if duration <= 0:
            raise AudioError("audio.zero_duration", "the audio decodes to nothing", "Âm thanh có độ dài bằng 0.")
        digest = sha256_file(tmp)
        final = store / f"{digest}.mp3"
        size = tmp.stat().st_size
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
        logger.info("prepared %s -> %s (%.1fs, %d bytes)", src.name, final.name, duration, size)
        return Prepared(digest, final, size, round(duration * 1000), "mp3", info.codec, info.duration_s)
    finally:
        tmp.unlink(missing_ok=True)
