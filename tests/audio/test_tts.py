"""Offline speech with espeak-ng for real; engine order and fallbacks."""

from __future__ import annotations

import pytest

from audio import ffmpeg, tts
from audio.errors import AudioError

OFFLINE = tts.TtsSettings(engines=("espeak",))


def test_espeak_speaks_vietnamese(tmp_path):
    speech = tts.synthesize("Xin chào bà con thôn 3.", tmp_path, OFFLINE)
    assert speech.engine == "espeak" and speech.voice == "vi"
    assert "thôn ba" in speech.text
    info = ffmpeg.probe(speech.path)
    assert info.channels == 1 and speech.duration_s > 1
    assert ffmpeg.measure_output(speech.path).integrated_lufs > -40


@pytest.mark.parametrize("voice", tts.ESPEAK_VOICES)
def test_every_offline_voice(tmp_path, voice):
    assert tts.synthesize("Mời họp.", tmp_path, OFFLINE, voice=voice).voice == voice


def test_long_text_is_spoken_in_pieces_and_joined(tmp_path):
    text = " ".join(f"Đây là câu số {n} của thông báo." for n in range(1, 41))
    settings = tts.TtsSettings(engines=("espeak",), piece_chars=120)
    speech = tts.synthesize(text, tmp_path, settings)
    assert speech.duration_s > 40
    assert [p.name for p in tmp_path.iterdir()] == ["speech.wav"]  # the pieces were removed


def test_unavailable_engines_hand_over_to_espeak(tmp_path):
    settings = tts.TtsSettings(engines=("piper", "gtts", "espeak"), piper_model=str(tmp_path / "missing.onnx"),
                               gtts_url="http://127.0.0.1:9/nothing", gtts_timeout_s=0.5)
    speech = tts.synthesize("Xin chào.", tmp_path / "w", settings, engine="gtts")
    assert speech.engine == "espeak"
    assert tts.available(settings) == ["gtts", "espeak"]


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"text": "   "}, "tts.empty"),
    ({"text": "x" * 30}, "tts.too_long"),
    ({"text": "x", "engine": "sam"}, "tts.bad_engine"),
    ({"text": "x", "voice": "en"}, "tts.bad_voice"),
    ({"text": "!!! ..."}, "tts.empty"),
])
def test_bad_requests(tmp_path, kwargs, code):
    text = kwargs.pop("text")
    with pytest.raises(AudioError) as err:
        tts.synthesize(text, tmp_path, tts.TtsSettings(engines=("espeak",), max_chars=20), **kwargs)
    assert err.value.code == code and err.value.message_vi
