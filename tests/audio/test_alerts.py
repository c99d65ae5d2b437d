"""An alert's sound, listened to: chime rising, the message three times with pauses, chime falling."""

from __future__ import annotations

import array
import math
import wave
from pathlib import Path

import pytest

from audio import alerts, assemble
from audio.errors import AudioError

from helpers import tone

WINDOW_S = 0.1


def _windows(path: Path) -> tuple[list[float], list[list[int]]]:
    """Per 100 ms window: the RMS level, and the samples (to find the pitch)."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = array.array("h", w.readframes(w.getnframes()))
    n = int(rate * WINDOW_S)
    chunks = [list(samples[i:i + n]) for i in range(0, len(samples) - n + 1, n)]
    return [math.sqrt(sum(x * x for x in c) / len(c)) for c in chunks], chunks


def _pitch(chunk: list[int], rate: int = assemble.RATE) -> float:
    """Zero crossings per second / 2: the frequency of a clean tone."""
    crossings = sum(1 for a, b in zip(chunk, chunk[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(chunk) / rate)


def test_a_live_alert_is_chime_message_three_times_chime(tmp_path: Path) -> None:
    message = tone(tmp_path / "msg.wav", 2, frequency=300, codec=["-c:a", "pcm_s16le"])
    out = tmp_path / "alert.wav"
    seconds = assemble.join(alerts.sequence(message, repeat=3, gap_s=2.0, chime=alerts.chimes(tmp_path)), out)
    assert seconds == pytest.approx(2.55 + 0.6 + 3 * 2 + 2 * 2.0 + 0.6 + 2.55, abs=0.3)
    levels, chunks = _windows(out)
    # The test tone beeps 0.6 s of every second: find the message by its pitch, the chimes by theirs.
    message_windows = [i for i, c in enumerate(chunks) if levels[i] > 500 and abs(_pitch(c) - 300) < 30]
    chime_windows = [i for i, c in enumerate(chunks) if levels[i] > 500 and _pitch(c) > 450]
    assert chime_windows[0] < 5 and chime_windows[-1] > len(chunks) - 15  # it opens and closes with a chime
    assert min(message_windows) > 25 and max(message_windows) < len(chunks) - 25
    # Three passes of the message, the pauses between them silent.
    passes = [i for i in message_windows if i - 1 not in message_windows and i - 10 not in message_windows
              and i - 5 not in message_windows]
    assert len(passes) == 3, message_windows
    gap = range(passes[1] - 15, passes[1] - 2)
    assert all(levels[i] < 50 for i in gap), [round(levels[i]) for i in gap]
    # The opening chime rises, the closing one falls.
    opening = [_pitch(chunks[i]) for i in range(0, 20, 4)]
    closing = [_pitch(chunks[i]) for i in range(len(chunks) - 24, len(chunks) - 6, 4)]
    assert opening[0] < opening[-1] and closing[0] > closing[-1], (opening, closing)


def test_a_drill_says_so_before_and_after(tmp_path: Path) -> None:
    message = tone(tmp_path / "msg.wav", 1, frequency=300, codec=["-c:a", "pcm_s16le"])
    notice = tone(tmp_path / "notice.wav", 1, frequency=700, codec=["-c:a", "pcm_s16le"])
    end = tone(tmp_path / "end.wav", 1, frequency=900, codec=["-c:a", "pcm_s16le"])
    pieces = alerts.sequence(message, repeat=2, gap_s=1.0, drill=(notice, end))
    assert [p for p in pieces if isinstance(p, Path)] == [notice, message, message, end]
    live = alerts.sequence(message, repeat=2, gap_s=1.0)
    assert notice not in live and end not in live


@pytest.mark.parametrize(("repeat", "gap_s", "code"), [(0, 1.0, "alert.bad_repeat"), (6, 1.0, "alert.bad_repeat"),
                                                       (3, -1.0, "alert.bad_gap"), (3, 31.0, "alert.bad_gap")])
def test_out_of_range_repeat_and_gap_are_refused_in_vietnamese(tmp_path: Path, repeat: int, gap_s: float,
                                                                code: str) -> None:
    with pytest.raises(AudioError) as err:
        alerts.sequence(tmp_path / "msg.wav", repeat=repeat, gap_s=gap_s)
    assert err.value.code == code and err.value.message_vi


def test_chime_notes_are_checked(tmp_path: Path) -> None:
    from audio import ffmpeg

    with pytest.raises(ValueError):
        ffmpeg.generate_chime(tmp_path / "x.wav", ())
    with pytest.raises(ValueError):
        ffmpeg.generate_chime(tmp_path / "x.wav", (20.0,))
