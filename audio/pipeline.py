"""Turn any bulletin input into a content-addressed, broadcast-ready distribution file.

probe → validate → measure (pass 1: EBU R128 on the mono, high-passed signal)
→ normalise and encode (pass 2: one linear gain, a peak limiter, the
distribution codec) → sha256 → rename into the store. Everything streams
through ffmpeg; nothing partial ever lands under its final name.

Only the file extensions in :data:`EXTENSIONS` and the containers in
``ffmpeg.DEMUXERS`` are accepted. A file that decodes to clearly less than
its container states (cut short in a download or a copy) is kept, with an
``audio.truncated`` warning naming both durations. The duration stored is
the one of the encoded file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audio import ffmpeg
from audio.errors import AudioError, AudioWarning

logger = logging.getLogger(__name__)

SILENT_LUFS = -69.0
"""ebur128 reports -70 LUFS when every block is gated out: the input is silence."""
MAX_GAIN_DB = 50.0
CODEC_OFFSET_DB = {"mp3": 0.5, "opus": 0.0}
"""Level the encoder loses, measured here (a 1 kHz sine loses 0.4 LU through libmp3lame and
ffmpeg's decoder, at 48 and 128 kbps alike; espeak speech 0.5 LU); added to the gain up front."""
TOLERANCE_LU = 0.5
DURATION_SLACK_S = 0.5
"""An encoder's padding must not make a three-hour recording "longer than three hours"."""
TRUNCATED_MIN_S = 1.0
TRUNCATED_FRACTION = 0.02
"""A decode this much shorter than the container states (the larger of the two) is a file cut short."""
GAP_WARN_S = 0.3
"""Pass 2 reporting this much more than the file it wrote holds means timestamps had gaps: logged."""

# Containers ffprobe may name for each family of file extensions: a name that
# claims one family while the bytes are another is refused.
_FAMILIES: dict[str, tuple[str, ...]] = {
    "mp3": ("mp3",),
    "wav": ("wav", "w64"),
    "m4a": ("mov", "mp4", "m4a", "3gp", "aac"), "aac": ("aac", "mov", "mp4", "m4a", "adts"),
    "mp4": ("mov", "mp4", "m4a"), "mov": ("mov", "mp4"), "3gp": ("mov", "mp4", "3gp", "amr"),
    "amr": ("amr", "amrnb", "amrwb"), "ogg": ("ogg",), "opus": ("ogg",), "oga": ("ogg",),
    "flac": ("flac",), "wma": ("asf",), "asf": ("asf",), "mkv": ("matroska", "webm"),
    "webm": ("matroska", "webm"), "mka": ("matroska", "webm"), "weba": ("matroska", "webm"),
    "3gpp": ("mov", "mp4", "3gp", "amr"),
}
EXTENSIONS = frozenset(_FAMILIES)
"""File extensions an upload may have; anything else (.m3u8, .txt, no extension) is refused unread."""


@dataclass(frozen=True)
class Settings:
    """How inputs are normalised and encoded (all from the controller's config)."""

    target_lufs: float = -16.0
    true_peak_db: float = -1.5
    highpass_hz: float = 120.0
    lowpass_hz: float = 8000.0
    trim_silence: bool = False
    encoding: ffmpeg.Encoding = ffmpeg.Encoding()
    max_duration_s: float = 3 * 3600
    limiter_margin_db: float = 0.5  # the limiter holds sample peaks this far under the true-peak target
    correct_up_to_s: float = 600.0  # outputs up to this long are re-measured and, if off, encoded again


@dataclass(frozen=True)
class Prepared:
    """A distribution file in the media store, with what was measured on the way."""

    sha256: str
    path: Path
    bytes: int
    duration_ms: int
    format: str
    source_codec: str | None
    source_duration_s: float | None
    loudness_in_lufs: float | None = None
    peak_in_db: float | None = None
    loudness_lufs: float | None = None
    peak_db: float | None = None
    peaks: tuple[float, ...] = ()
    warning: AudioWarning | None = None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extension(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[1].lower().strip() if "." in base else ""


def check_extension(name: str) -> str:
    """The extension of an upload's file name; AudioError ``upload.unsupported_type`` unless it is one
    of :data:`EXTENSIONS`. Checked before a byte of the upload is read."""
    ext = _extension(name)
    if ext not in EXTENSIONS:
        shown = f".{ext[:20]}" if ext else "no extension"
        raise AudioError("upload.unsupported_type",
                         f"files with {shown} are not accepted; send one of: {', '.join(sorted(EXTENSIONS))}",
                         "Loại tệp này không được nhận. Hãy gửi tệp âm thanh hoặc video (MP3, WAV, M4A, AMR, "
                         "OGG, ...).")
    return ext


def check_name(name: str | None, info: ffmpeg.ProbeResult) -> None:
    """Refuse a file whose extension is not accepted, or claims a format its bytes are not
    (``x.mp3`` that is a WAV); without a name (speech, the CLI) only the bytes count."""
    if not name:
        return
    ext = check_extension(name)
    family = _FAMILIES[ext]
    found = set(info.format_name.lower().split(","))
    if not any(f in found for f in family):
        raise AudioError("audio.name_mismatch",
                         f"the file is named .{ext} but holds {info.format_name}",
                         f"Tên tệp là .{ext} nhưng nội dung không phải định dạng đó.")


def validate(path: Path, *, max_duration_s: float, name: str | None = None) -> ffmpeg.ProbeResult:
    """Probe ``path`` and refuse what cannot become a bulletin."""
    if path.stat().st_size == 0:
        raise AudioError("audio.empty", "the uploaded file is empty", "Tệp tải lên rỗng.")
    info = ffmpeg.probe(path)
    if info.demuxer is None:
        raise AudioError("audio.unsupported_format", f"the file is read as {info.format_name}, not an accepted "
                         "audio or video container", "Định dạng tệp này không được chấp nhận.")
    if not info.has_audio:
        raise AudioError("audio.no_stream", "the file has no audio stream", "Tệp không có âm thanh.")
    if info.duration_s is not None and info.duration_s <= 0:
        raise AudioError("audio.zero_duration", "the audio lasts zero seconds", "Âm thanh có độ dài bằng 0.")
    if info.duration_s is not None and info.duration_s > max_duration_s + DURATION_SLACK_S:
        raise _too_long(info.duration_s, max_duration_s)
    check_name(name, info)
    return info


def _too_long(duration_s: float, max_duration_s: float) -> AudioError:
    return AudioError("audio.too_long",
                      f"the audio lasts {duration_s:.0f}s, over the {max_duration_s:.0f}s limit",
                      f"Âm thanh dài quá giới hạn {max_duration_s / 60:.0f} phút.")


def prepare(src: Path, store: Path, *, settings: Settings | None = None, name: str | None = None,
            on_progress: ffmpeg.Progress | None = None, max_duration_s: float | None = None,
            bitrate: str | None = None) -> Prepared:
    """Validate, normalise, encode and store ``src``; identical output is stored once.

    ``on_progress`` receives the fraction done (pass 1 is the first fifth).
    The output is written to a temporary file in the store, checked, and
    renamed to ``<sha256>.<ext>`` only when complete. Outputs up to
    ``settings.correct_up_to_s`` long are measured again (true peak) and
    re-encoded when they missed; for longer ones the loudness after is the
    estimate from pass 1 and the gain.
    """
    s = settings or Settings()
    if max_duration_s is not None or bitrate is not None:
        s = Settings(**{**s.__dict__, "max_duration_s": max_duration_s or s.max_duration_s,
                        "encoding": ffmpeg.Encoding(s.encoding.format, bitrate or s.encoding.bitrate,
                                                    s.encoding.sample_rate)})
    info = validate(src, max_duration_s=s.max_duration_s, name=name)
    report = on_progress or (lambda _f: None)
    store.mkdir(parents=True, exist_ok=True)
    ext = s.encoding.extension
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", suffix=f".{ext}", dir=store)
    os.close(fd)
    tmp = Path(tmp_name)
    envelope_file = tmp.with_suffix(".envelope")
    try:
        m = ffmpeg.measure(src, highpass_hz=s.highpass_hz, lowpass_hz=s.lowpass_hz,
                           max_duration_s=s.max_duration_s, trim_silence=s.trim_silence,
                           envelope_file=envelope_file, expected_s=info.duration_s,
                           on_progress=lambda f: report(0.2 * f), input_format=info.demuxer)
        if m.duration_s <= 0:
            raise AudioError("audio.zero_duration", "the audio decodes to nothing", "Âm thanh có độ dài bằng 0.")
        if m.duration_s > s.max_duration_s + DURATION_SLACK_S:
            raise _too_long(m.duration_s, s.max_duration_s)
        if m.loudness.integrated_lufs < SILENT_LUFS:
            raise AudioError("audio.silent", "the recording is silent", "Bản ghi không có tiếng (im lặng).")
        offset = CODEC_OFFSET_DB.get(s.encoding.format, 0.0)
        gain = min(MAX_GAIN_DB, s.target_lufs - m.loudness.integrated_lufs + offset)
        limit = s.true_peak_db - s.limiter_margin_db
        end = m.duration_s - m.trail_silence_s if m.trail_silence_s > 0 else None

        def encode(gain_db: float, limit_db: float, lo: float, hi: float) -> float:
            return ffmpeg.normalise_encode(src, tmp, gain_db=gain_db, limit_db=limit_db,
                                           highpass_hz=s.highpass_hz, lowpass_hz=s.lowpass_hz,
                                           encoding=s.encoding, max_duration_s=s.max_duration_s,
                                           start_s=m.lead_silence_s, end_s=end, expected_s=m.duration_s,
                                           on_progress=lambda f: report(lo + (hi - lo) * f),
                                           input_format=info.demuxer)

        short = m.duration_s <= s.correct_up_to_s
        duration = encode(gain, limit, 0.2, 0.85 if short else 1.0)
        if duration <= 0 or tmp.stat().st_size == 0:
            raise AudioError("audio.zero_duration", "the audio encodes to nothing", "Âm thanh có độ dài bằng 0.")
        if short:
            gain, limit, duration, after = _correct(s, src, tmp, gain, limit, duration, encode)
        else:
            after = ffmpeg.Loudness(round(m.loudness.integrated_lufs + gain - offset, 1), float("nan"))
        written = ffmpeg.output_duration(tmp)
        if abs(written - duration) > GAP_WARN_S:
            logger.warning("%s: ffmpeg reported %.2fs written but the file holds %.2fs", src.name, duration,
                           written)
        duration = written
        warning = truncation(info, m)
        peaks = [min(round(10 ** (limit / 20), 2), round(p * 10 ** (gain / 20), 2))
                 for p in ffmpeg.envelope(envelope_file, start_s=m.lead_silence_s, end_s=end)]
        digest = sha256_file(tmp)
        final = store / f"{digest}.{ext}"
        size = tmp.stat().st_size
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
        report(1.0)
        logger.info("prepared %s -> %s (%.1fs, %d bytes, %.1f -> %.1f LUFS)", src.name, final.name,
                    duration, size, m.loudness.integrated_lufs, after.integrated_lufs)
        return Prepared(digest, final, size, round(duration * 1000), ext, info.codec, info.duration_s,
                        loudness_in_lufs=m.loudness.integrated_lufs, peak_in_db=_finite(m.loudness.peak_db),
                        loudness_lufs=after.integrated_lufs, peak_db=_finite(after.peak_db), peaks=tuple(peaks),
                        warning=warning)
    finally:
        tmp.unlink(missing_ok=True)
        envelope_file.unlink(missing_ok=True)


def truncation(info: ffmpeg.ProbeResult, m: ffmpeg.Measurement) -> AudioWarning | None:
    """An ``audio.truncated`` warning when the decode is clearly shorter than the container states
    (a duration ffmpeg only estimated from the bitrate does not count), or when the decoder failed
    at the very end; None for a whole file."""
    stated = info.audio_duration_s or info.duration_s
    short = (stated is not None and not info.duration_estimated
             and stated - m.duration_s > max(TRUNCATED_MIN_S, TRUNCATED_FRACTION * stated))
    # AMR's DTX frames (SID, NO_DATA) are logged as decode errors wherever silence falls: not damage.
    broken_end = m.end_errors > 0 and not (info.codec or "").startswith("amr")
    if not short and not broken_end:
        return None
    said = f"{stated:.1f}" if stated is not None else "?"
    logger.info("truncated input: %.2fs decoded of %s s stated (%d decoder errors at the end)", m.duration_s,
                said, m.end_errors)
    return AudioWarning(
        "audio.truncated",
        f"the file seems cut short: {m.duration_s:.1f} s of audio could be decoded, its header says {said} s; "
        "only the decodable part is kept",
        f"Tệp có vẻ bị cắt cụt: chỉ đọc được {_vi_seconds(m.duration_s)} giây âm thanh, trong khi tệp ghi là "
        f"{_vi_seconds(stated) if stated is not None else '?'} giây. Chỉ phần đọc được được giữ lại.")


def _vi_seconds(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


def _correct(s: Settings, src: Path, tmp: Path, gain: float, limit: float, duration: float,
             encode: Callable[[float, float, float, float], float]) -> tuple[float, float, float, ffmpeg.Loudness]:
    """Measure a short output (true peak) and encode again while it misses the target or the ceiling.

    A limiter working hard on peaky speech (espeak-ng's voice has 19 dB
    between loudness and peak) lowers the loudness, and the encoder can
    overshoot the ceiling.
    """
    after = ffmpeg.measure_output(tmp)
    tried = [(gain, after.integrated_lufs)]
    for attempt in range(3):
        miss = s.target_lufs - after.integrated_lufs
        over = after.peak_db - s.true_peak_db
        if (abs(miss) <= TOLERANCE_LU and over <= 0) or after.integrated_lufs <= SILENT_LUFS:
            break
        if over > 0:
            limit = max(-24.0, limit - over - 0.3)
        if abs(miss) > TOLERANCE_LU or attempt == 2:
            # The limiter eats part of each added dB: the secant of the last two tries says how much.
            slope = 1.0
            if len(tried) >= 2 and tried[-1][0] != tried[-2][0]:
                slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
                slope = min(1.0, max(0.25, slope))
            gain = min(MAX_GAIN_DB + 6, gain + max(-6.0, min(8.0, miss / slope)))
        logger.info("%s: %.1f LUFS %.1f dBTP after encoding; again with gain %+.1f dB, limit %.1f dB",
                    src.name, after.integrated_lufs, after.peak_db, gain, limit)
        duration = encode(gain, limit, 0.85 + 0.04 * attempt, 0.89 + 0.04 * attempt)
        after = ffmpeg.measure_output(tmp)
        tried.append((gain, after.integrated_lufs))
    if after.peak_db > s.true_peak_db:
        # The ceiling is a hard rule, loudness a target: give up loudness rather than peaks.
        limit = max(-24.0, limit - (after.peak_db - s.true_peak_db) - 0.5)
        logger.info("%s: still %.1f dBTP; limit %.1f dB", src.name, after.peak_db, limit)
        duration = encode(gain, limit, 0.97, 1.0)
        after = ffmpeg.measure_output(tmp)
    return gain, limit, duration, after


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
