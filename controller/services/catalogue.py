"""The catalogue of bulletins: uploads become content-addressed media in a worker pool."""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flask import Flask
from sqlalchemy.orm import Session

from audio import pipeline
from audio.errors import AudioError
from controller.db import session_scope
from controller.models import Bulletin, Media
from schedules.events import now_ms

logger = logging.getLogger(__name__)


class Catalogue:
    """Accepts uploads and transcodes them off the request thread."""

    def __init__(self, app: Flask):
        self.app = app
        self.media_dir = Path(app.config["MEDIA_DIR"])
        self.incoming = Path(app.config["VAR_DIR"]) / "incoming"
        self.pool = ThreadPoolExecutor(max_workers=int(app.config["AUDIO_WORKERS"]), thread_name_prefix="audio")

    def shutdown(self) -> None:
        """Finish running jobs and stop the pool."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def save_upload(self, stream, max_bytes: int) -> Path:
        """Copy an upload stream to a private temporary file, refusing more than ``max_bytes``."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.incoming)
        path = Path(name)
        total = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    total += len(chunk)
                    if total > max_bytes:
                        raise AudioError("upload.too_large", f"the upload exceeds {max_bytes} bytes",
                                         f"Tệp lớn hơn giới hạn {max_bytes // (1024 * 1024)} MB.")
                    out.write(chunk)
            if total == 0:
                raise AudioError("audio.empty", "the uploaded file is empty", "Tệp tải lên rỗng.")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def check_upload(self, path: Path) -> None:
        """Probe in the request so that what is plainly not audio is refused at once."""
        try:
            pipeline.validate(path, max_duration_s=float(self.app.config["MAX_DURATION_S"]))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def submit(self, bulletin_id: int, path: Path) -> None:
        """Queue the transcode of an accepted upload."""
        self.pool.submit(self._process, bulletin_id, path)

    def process_now(self, db: Session, bulletin: Bulletin, path: Path) -> None:
        """Transcode synchronously (CLI and demo)."""
        self._transcode_into(db, bulletin, path)

    def _process(self, bulletin_id: int, path: Path) -> None:
        try:
            with session_scope(self.app) as db:
                bulletin = db.get(Bulletin, bulletin_id)
                if bulletin is None:
                    return
                bulletin.status = "processing"
            with session_scope(self.app) as db:
                bulletin = db.get(Bulletin, bulletin_id)
                self._transcode_into(db, bulletin, path)
        except Exception:  # noqa: BLE001 - record the failure on the bulletin
            logger.exception("bulletin=%s: processing crashed", bulletin_id)
            with session_scope(self.app) as db:
                bulletin = db.get(Bulletin, bulletin_id)
                if bulletin is not None:
                    bulletin.status = "failed"
                    bulletin.error_code = "audio.internal"
                    bulletin.error_message = "internal error while processing the audio"
        finally:
            path.unlink(missing_ok=True)

    def _transcode_into(self, db: Session, bulletin: Bulletin, path: Path) -> None:
        try:
            prepared = pipeline.prepare(path, self.media_dir,
                                        max_duration_s=float(self.app.config["MAX_DURATION_S"]),
                                        bitrate=str(self.app.config["AUDIO_BITRATE"]))
        except AudioError as exc:
            bulletin.status = "failed"
            bulletin.error_code = exc.code
            bulletin.error_message = exc.message
            logger.warning("bulletin=%s refused: %s %s", bulletin.id, exc.code, exc.message)
            return
        if db.get(Media, prepared.sha256) is None:
            db.add(Media(sha256=prepared.sha256, format=prepared.format, bytes=prepared.bytes,
                         duration_ms=prepared.duration_ms, created_ms=now_ms()))
        bulletin.media_sha256 = prepared.sha256
        bulletin.status = "ready"
        logger.info("bulletin=%s ready: %s (%d ms)", bulletin.id, prepared.sha256, prepared.duration_ms)
