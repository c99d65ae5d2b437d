"""A generated sine tone for the ``test_tone`` command (checks the amplifier and speaker lines).

The tone's peak is -13 dBFS, so its RMS (-16 dBFS) sits at the programme's
loudness target (-16 LUFS; K-weighting changes a 1 kHz sine by under 1 dB): at
the programme volume a test tone is as loud as a bulletin, not louder. It
fades in and out over ``FADE_MS`` so the speakers do not click.
"""

from __future__ import annotations

import math
import sys
from array import array

PEAK = 10 ** (-13 / 20)
FADE_MS = 10


def sine(frequency_hz: float, sample_rate: int, start_frame: int, n_frames: int, total_frames: int) -> bytes:
    """Mono s16le PCM of frames ``[start_frame, start_frame + n_frames)`` of a ``total_frames``-long tone."""
    fade = max(1, sample_rate * FADE_MS // 1000)
    step = 2 * math.pi * frequency_hz / sample_rate
    full = PEAK * 32767
    samples = array("h")
    for i in range(start_frame, start_frame + n_frames):
        gain = min(1.0, i / fade, (total_frames - 1 - i) / fade) if total_frames > 1 else 0.0
        samples.append(int(round(full * max(0.0, gain) * math.sin(step * i))))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
