"""Assembly of short pieces: intro, items with gaps, repeats, outro; clicks faded away."""

from __future__ import annotations

import wave

import pytest

from audio import assemble
from audio.errors import AudioError

from helpers import tone


def _seconds(path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_intro_body_repeats_and_outro(tmp_path):
    intro = tone(tmp_path / "intro.mp3", 1, frequency=880)
    body = tone(tmp_path / "body.wav", 2, codec=["-c:a", "pcm_s16le"])
    outro = tone(tmp_path / "outro.mp3", 1, frequency=660)
    out = tmp_path / "out.wav"
    seq = assemble.sequence([body], intro=intro, outro=outro, gap_s=0.5, repeat=3, repeat_gap_s=2)
    seconds = assemble.join(seq, out)
    assert seconds == pytest.approx(1 + 0.5 + 3 * 2 + 2 * 2 + 0.5 + 1, abs=0.2)
    assert _seconds(out) == pytest.approx(seconds, abs=0.01)


def test_pieces_fade_in_and_out(tmp_path):
    import array

    body = tone(tmp_path / "body.wav", 1, codec=["-c:a", "pcm_s16le"])
    out = tmp_path / "out.wav"
    assemble.join([body, assemble.Gap(0.1), body], out, fade_ms=10)
    with wave.open(str(out)) as w:
        samples = array.array("h", w.readframes(w.getnframes()))
    first = samples[:20]
    assert max(abs(s) for s in first) < 2000  # a sine at full scale would start near its peak within 20 samples


def test_repeat_bounds():
    with pytest.raises(AudioError) as err:
        assemble.sequence([], repeat=11)
    assert err.value.code == "assembly.bad_repeat"
