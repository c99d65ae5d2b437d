"""The sound of an alert: opening chime, (drill notice), the message N times, (drill notice), closing chime.

As the municipal disaster loudspeakers of J-Alert do it: a chime that makes
people listen, the message three times with a pause between, and a closing
chime (falling) so that the end is heard as an end. A drill (diễn tập) says so
before and after the message, in words, so that nobody who hears any part of
it can take it for a real alert. The chimes are generated here
(:func:`audio.ffmpeg.generate_chime`), so the project owns them.

The result is one WAV, assembled by :mod:`audio.assemble`, which then goes
through the normalising pipeline like any upload (one file: a receiver that
joins under way plays it from where the alert stands).
"""

from __future__ import annotations

from pathlib import Path

from audio import ffmpeg
from audio.assemble import Gap, Piece
from audio.errors import AudioError

OPENING_NOTES_HZ = (523.25, 659.25, 783.99, 1046.50)
"""C5 E5 G5 C6, rising: listen."""
CLOSING_NOTES_HZ = tuple(reversed(OPENING_NOTES_HZ))
"""The same, falling: the announcement is over."""
DRILL_NOTICE_VI = "Đây là bản tin diễn tập. Đây là bản tin diễn tập, không phải báo động thật."
"""Spoken before and after a drill's message."""
DRILL_END_VI = "Kết thúc bản tin diễn tập."
REPEAT_RANGE = (1, 5)
GAP_RANGE_S = (0.0, 30.0)


def chimes(workdir: Path) -> tuple[Path, Path]:
    """The opening and closing chime as WAVs in ``workdir`` (made once per directory)."""
    opening, closing = workdir / "chime-open.wav", workdir / "chime-close.wav"
    if not opening.exists():
        ffmpeg.generate_chime(opening, OPENING_NOTES_HZ)
    if not closing.exists():
        ffmpeg.generate_chime(closing, CLOSING_NOTES_HZ)
    return opening, closing


def sequence(message: Path, *, repeat: int = 3, gap_s: float = 4.0, chime: tuple[Path, Path] | None = None,
             drill: tuple[Path, Path] | None = None) -> list[Piece]:
    """The pieces of an alert, in order.

    ``chime`` is (opening, closing) or None for none; ``drill`` is the spoken
    (notice, end) of a drill, or None for a live alert.
    """
    if not REPEAT_RANGE[0] <= repeat <= REPEAT_RANGE[1]:
        raise AudioError("alert.bad_repeat", f"repeat must be {REPEAT_RANGE[0]}-{REPEAT_RANGE[1]}",
                         f"Số lần phát phải từ {REPEAT_RANGE[0]} đến {REPEAT_RANGE[1]}.")
    if not GAP_RANGE_S[0] <= gap_s <= GAP_RANGE_S[1]:
        raise AudioError("alert.bad_gap", f"the gap must be {GAP_RANGE_S[0]:g}-{GAP_RANGE_S[1]:g} s",
                         f"Khoảng nghỉ phải từ {GAP_RANGE_S[0]:g} đến {GAP_RANGE_S[1]:g} giây.")
    pieces: list[Piece] = []
    if chime is not None:
        pieces += [chime[0], Gap(0.6)]
    if drill is not None:
        pieces += [drill[0], Gap(1.0)]
    for n in range(repeat):
        if n:
            pieces.append(Gap(gap_s))
        pieces.append(message)
    if drill is not None:
        pieces += [Gap(1.0), drill[1]]
    if chime is not None:
        pieces += [Gap(0.6), chime[1]]
    return pieces
