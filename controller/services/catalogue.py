"""The catalogue of bulletins: uploads and texts become content-addressed media in a worker pool.

Every transcode and every text-to-speech job runs in a bounded pool, never in
the request thread. The job's state (queued, processing with a percentage,
ready, failed with a code and reasons in English and Vietnamese) is kept on
the Bulletin row, with a warning (code and reasons) when the audio was kept
with a reservation such as a file cut short; temporary files are removed on
every path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from sqlalchemy.orm import Session

from audio import assemble, ffmpeg, pipeline, tts
from audio.errors import AudioError
from controller.db import session_scope
from controller.models import Bulletin, Media
from schedules.events import now_ms

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class TtsRequest:
    """What a text bulletin asks for: engine and voice preferences, repeats, jingles (media sha256)."""

    text: str
    engine: str | None = None
    voice: str | None = None
    repeat: int = 1
    repeat_gap_s: float = 3.0
    intro: str | None = None
    outro: str | None = None


@dataclass(frozen=True)
class Preview:
    """Rendered audio that was not stored: for listening before saving."""

    data: bytes
    mimetype: str
    engine: str
    voice: str
    text: str
    duration_ms: int
    loudness_lufs: float | None


def pipeline_settings(config) -> pipeline.Settings:
    """Normalisation settings from the app config."""
    return pipeline.Settings(
        target_lufs=float(config["AUDIO_TARGET_LUFS"]),
        true_peak_db=float(config["AUDIO_TRUE_PEAK_DB"]),
        highpass_hz=float(config["AUDIO_HIGHPASS_HZ"] or 0),
        lowpass_hz=float(config["AUDIO_LOWPASS_HZ"] or 0),
        trim_silence=bool(config["AUDIO_TRIM_SILENCE"]),
        encoding=ffmpeg.Encoding(str(config["AUDIO_FORMAT"]), str(config["AUDIO_BITRATE"]),
                                 int(config["AUDIO_SAMPLE_RATE"])),
        max_duration_s=float(config["MAX_DURATION_S"]),
        correct_up_to_s=float(config["AUDIO_CORRECT_UP_TO_S"]),
    )


def tts_settings(config) -> tts.TtsSettings:
    """Text-to-speech settings from the app config."""
    engines = config["TTS_ENGINES"]
    if isinstance(engines, str):
        engines = [e.strip() for e in engines.split(",") if e.strip()]
    return tts.TtsSettings(
        engines=tuple(engines),
        gtts_url=config.get("TTS_GTTS_URL") or None,
        gtts_timeout_s=float(config["TTS_GTTS_TIMEOUT_S"]),
        espeak_voice=str(config["TTS_ESPEAK_VOICE"]),
        espeak_rate=int(config["TTS_ESPEAK_RATE"]),
        espeak_word_gap=int(config["TTS_ESPEAK_WORD_GAP"]),
        piper_model=config.get("TTS_PIPER_MODEL") or None,
        piper_command=str(config["TTS_PIPER_COMMAND"]),
        abbreviations=dict(config.get("TTS_ABBREVIATIONS") or {}),
        max_chars=int(config["TTS_MAX_CHARS"]),
    )


class Catalogue:
    """Accepts uploads and texts and turns them into media off the request thread."""

    def __init__(self, app: Flask):
        self.app = app
        self.media_dir = Path(app.config["MEDIA_DIR"])
        self.incoming = Path(app.config["VAR_DIR"]) / "incoming"
        self.pool = ThreadPoolExecutor(max_workers=int(app.config["AUDIO_WORKERS"]), thread_name_prefix="audio")

    @property
    def settings(self) -> pipeline.Settings:
        """Current normalisation settings."""
        return pipeline_settings(self.app.config)

    @property
    def tts_settings(self) -> tts.TtsSettings:
        """Current text-to-speech settings."""
        return tts_settings(self.app.config)

    def shutdown(self) -> None:
        """Finish running jobs, drop queued ones, and remove what they left in the incoming directory."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.incoming.exists():
            for leftover in self.incoming.iterdir():
                if leftover.name.startswith(("upload-", "tts-", "preview-")):
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)

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

    def check_upload(self, path: Path, name: str | None = None) -> None:
        """Probe in the request so that what is plainly not audio is refused at once."""
        try:
            pipeline.validate(path, max_duration_s=float(self.app.config["MAX_DURATION_S"]), name=name)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def submit(self, bulletin_id: int, path: Path, name: str | None = None) -> Future:
        """Queue the transcode of an accepted upload; the pool owns ``path`` from now on."""
        def work(progress):
            return pipeline.prepare(path, self.media_dir, settings=self.settings, name=name,
                                    on_progress=progress), {}

        return self.pool.submit(self._run, bulletin_id, work, cleanup=lambda: path.unlink(missing_ok=True))

    def submit_tts(self, bulletin_id: int, request: TtsRequest) -> Future:
        """Queue speaking the text of a text bulletin."""
        return self.pool.submit(self._run, bulletin_id, lambda progress: self._speak_and_prepare(request, progress))

    def process_now(self, db: Session, bulletin: Bulletin, path: Path) -> None:
        """Transcode synchronously (CLI and demo)."""
        try:
            prepared = pipeline.prepare(path, self.media_dir, settings=self.settings)
        except AudioError as exc:
            _fail(bulletin, exc)
            return
        self._store(db, bulletin, prepared)

    def preview(self, request: TtsRequest, timeout_s: float = 300) -> Preview:
        """Speak and normalise ``request`` in the pool without storing anything; wait for the result."""
        future = self.pool.submit(self._render_preview, request)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as exc:
            future.cancel()
            raise AudioError("audio.timeout", "the preview took too long", "Nghe thử mất quá lâu, hãy thử lại.") \
                from exc

    # -- jobs ------------------------------------------------------------------------------------

    def _run(self, bulletin_id: int, work, cleanup=None) -> None:
        """Run ``work(progress)`` for a bulletin and record its outcome; a crash marks it failed, never the pool.

        No database session is held while ffmpeg runs: the outcome is written
        in a fresh one at the end.
        """
        try:
            with session_scope(self.app) as db:
                bulletin = db.get(Bulletin, bulletin_id)
                if bulletin is None:
                    return
                bulletin.status = "processing"
                bulletin.progress = 0
                bulletin.updated_ms = now_ms()
            try:
                prepared, extra = work(self._progress_writer(bulletin_id))
            except AudioError as exc:
                with session_scope(self.app) as db:
                    failed = db.get(Bulletin, bulletin_id)
                    if failed is not None:  # None: deleted while it was processed, nothing to record
                        _fail(failed, exc)
                return
            with session_scope(self.app) as db:
                bulletin = db.get(Bulletin, bulletin_id)
                if bulletin is None:
                    return
                for key, value in extra.items():
                    setattr(bulletin, key, value)
                self._store(db, bulletin, prepared)
        except Exception:  # noqa: BLE001 - record the failure on the bulletin
            logger.exception("bulletin=%s: processing crashed", bulletin_id)
            with session_scope(self.app) as db:
                bulletin = db.get(Bulletin, bulletin_id)
                if bulletin is not None:
                    _fail(bulletin, AudioError("audio.internal", "internal error while processing the audio",
                                               "Lỗi nội bộ khi xử lý âm thanh."))
        finally:
            if cleanup is not None:
                cleanup()

    def _progress_writer(self, bulletin_id: int):
        """A progress callback that writes the percentage at most every PROGRESS_EVERY_S."""
        last = {"t": 0.0, "pct": -1}

        def write(fraction: float) -> None:
            pct = max(0, min(99, int(fraction * 100)))
            now = time.monotonic()
            if pct <= last["pct"] or now - last["t"] < PROGRESS_EVERY_S:
                return
            last.update(t=now, pct=pct)
            try:
                with session_scope(self.app) as db:
                    b = db.get(Bulletin, bulletin_id)
                    if b is not None and b.status == "processing":
                        b.progress = pct
                        b.updated_ms = now_ms()
            except Exception:  # noqa: BLE001 - progress is best effort; the job goes on
                logger.warning("bulletin=%s: could not record progress", bulletin_id, exc_info=True)

        return write

    def _speak_and_prepare(self, request: TtsRequest, progress) -> tuple[pipeline.Prepared, dict]:
        workdir = Path(tempfile.mkdtemp(prefix="tts-", dir=self._incoming()))
        try:
            speech = self._speak(request, workdir)
            progress(0.3)
            prepared = pipeline.prepare(speech.path, self.media_dir, settings=self.settings,
                                        on_progress=lambda f: progress(0.3 + 0.7 * f))
            return prepared, {"tts_engine": speech.engine, "tts_voice": speech.voice}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _speak(self, request: TtsRequest, workdir: Path) -> tts.Speech:
        """Speech for ``request``, with jingles and repeats assembled around it."""
        speech = tts.synthesize(request.text, workdir, self.tts_settings, engine=request.engine, voice=request.voice)
        if request.repeat == 1 and not request.intro and not request.outro:
            return speech
        intro, outro = self._jingle(request.intro), self._jingle(request.outro)
        out = workdir / "assembled.wav"
        seconds = assemble.join(assemble.sequence([speech.path], intro=intro, outro=outro, repeat=request.repeat,
                                                  repeat_gap_s=request.repeat_gap_s), out)
        return tts.Speech(out, speech.engine, speech.voice, speech.text, seconds)

    def _jingle(self, sha256: str | None) -> Path | None:
        if not sha256:
            return None
        found = [p for p in self.media_dir.glob(f"{sha256}.*") if len(sha256) == 64 and sha256.isalnum()]
        if not found:
            raise AudioError("assembly.no_jingle", f"no media {sha256}", "Không tìm thấy nhạc hiệu đã chọn.")
        return found[0]

    def _render_preview(self, request: TtsRequest) -> Preview:
        workdir = Path(tempfile.mkdtemp(prefix="preview-", dir=self._incoming()))
        try:
            speech = self._speak(request, workdir)
            prepared = pipeline.prepare(speech.path, workdir / "out", settings=self.settings)
            mimetype = "audio/ogg" if prepared.format == "opus" else "audio/mpeg"
            return Preview(prepared.path.read_bytes(), mimetype, speech.engine, speech.voice, speech.text,
                           prepared.duration_ms, prepared.loudness_lufs)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _incoming(self) -> Path:
        self.incoming.mkdir(parents=True, exist_ok=True)
        return self.incoming

    def _store(self, db: Session, bulletin: Bulletin, prepared: pipeline.Prepared) -> None:
        if db.get(Media, prepared.sha256) is None:
            db.add(Media(sha256=prepared.sha256, format=prepared.format, bytes=prepared.bytes,
                         duration_ms=prepared.duration_ms, created_ms=now_ms(),
                         loudness_lufs=prepared.loudness_lufs, true_peak_db=prepared.peak_db,
                         peaks=json.dumps(list(prepared.peaks))))
        bulletin.media_sha256 = prepared.sha256
        warning = prepared.warning
        bulletin.warning_code = warning.code if warning else None
        bulletin.warning_message = warning.message if warning else None
        bulletin.warning_message_vi = warning.message_vi if warning else None
        bulletin.loudness_in_lufs = prepared.loudness_in_lufs
        bulletin.peak_in_db = prepared.peak_in_db
        bulletin.status = "ready"
        bulletin.progress = 100
        bulletin.updated_ms = now_ms()
        logger.info("bulletin=%s ready: %s (%d ms)%s", bulletin.id, prepared.sha256, prepared.duration_ms,
                    f" with warning {warning.code}" if warning else "")


def _fail(bulletin: Bulletin, exc: AudioError) -> None:
    bulletin.status = "failed"
    bulletin.error_code = exc.code
    bulletin.error_message = exc.message
    bulletin.error_message_vi = exc.message_vi
    bulletin.warning_code = bulletin.warning_message = bulletin.warning_message_vi = None
    bulletin.updated_ms = now_ms()
    logger.warning("bulletin=%s refused: %s %s", bulletin.id, exc.code, exc.message)
