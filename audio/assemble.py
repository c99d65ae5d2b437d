"""Assembly of short pieces with pydub: sentences of speech, intro and outro jingles, repeats.

Only one piece is held in memory at a time; the result is written frame by
frame to a WAV file, which then goes through the normalising pipeline like
any upload. pydub works here on raw PCM that ``audio.ffmpeg`` decoded, so
ffmpeg is still run by that module alone.
"""

from __future__ import annotations

import logging
import warnings
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audio import ffmpeg
from audio.errors import AudioError

logger = logging.getLogger(__name__)

RATE = 24000
MAX_PIECE_S = 900.0
MAX_TOTAL_S = 3 * 3600.0


@dataclass(frozen=True)
class Gap:
    """Silence of ``seconds`` between pieces."""

    seconds: float


Piece = Path | Gap


def _pydub() -> Any:
    """pydub's AudioSegment; pydub imports the deprecated ``audioop`` (Python 3.11-3.12), which is fine here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment
    return AudioSegment


def _segment(path: Path, fade_ms: int) -> Any:
    AudioSegment = _pydub()  # noqa: N806
    pcm = ffmpeg.decode_pcm(path, sample_rate=RATE, max_duration_s=MAX_PIECE_S)
    seg = AudioSegment(data=pcm, sample_width=2, frame_rate=RATE, channels=1)
    if fade_ms and len(seg) > 4 * fade_ms:
        seg = seg.fade_in(fade_ms).fade_out(fade_ms)  # no click where pieces meet
    return seg


def join(pieces: Iterable[Piece], dst: Path, *, fade_ms: int = 8) -> float:
    """Write ``pieces`` (files and gaps) one after another into the WAV ``dst``; return its seconds."""
    frames = 0
    with wave.open(str(dst), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        for piece in pieces:
            if isinstance(piece, Gap):
                n = int(max(0.0, piece.seconds) * RATE)
                data = b"\x00\x00" * n
            else:
                data = _segment(piece, fade_ms).raw_data
                n = len(data) // 2
            frames += n
            if frames > MAX_TOTAL_S * RATE:
                raise AudioError("assembly.too_long", "the assembled audio exceeds the duration limit",
                                 "Âm thanh ghép dài quá giới hạn.")
            out.writeframes(data)
    return frames / RATE


def sequence(body: list[Path], *, intro: Path | None = None, outro: Path | None = None, gap_s: float = 0.7,
             repeat: int = 1, repeat_gap_s: float = 3.0) -> list[Piece]:
    """The order of a broadcast: intro, the body (its items ``gap_s`` apart) ``repeat`` times
    with ``repeat_gap_s`` between, then the outro."""
    if not 1 <= repeat <= 10:
        raise AudioError("assembly.bad_repeat", "repeat must be between 1 and 10", "Số lần lặp phải từ 1 đến 10.")
    items: list[Piece] = []
    for i, path in enumerate(body):
        if i:
            items.append(Gap(gap_s))
        items.append(path)
    out: list[Piece] = []
    if intro is not None:
        out += [intro, Gap(gap_s)]
    for n in range(repeat):
        if n:
            out.append(Gap(repeat_gap_s))
        out += items
    if outro is not None:
        out += [Gap(gap_s), outro]
    return out
