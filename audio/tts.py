"""Vietnamese text to speech: gTTS when Google answers, Piper when a model is configured,
espeak-ng always (offline). The only module that imports gTTS or runs espeak-ng and Piper.

The text is normalised (``audio.textnorm``), split at sentence boundaries,
spoken piece by piece by the first engine that works, and joined with short
fades and pauses (``audio.assemble``) into one WAV. The caller sends that WAV
through the normalising pipeline, like an upload.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audio import assemble, textnorm
from audio.errors import AudioError

logger = logging.getLogger(__name__)

ENGINES = ("piper", "gtts", "espeak")
ESPEAK_VOICES = ("vi", "vi-vn-x-central", "vi-vn-x-south")


@dataclass(frozen=True)
class TtsSettings:
    """Engines and their tuning (from the controller's ``TTS_*`` settings)."""

    engines: tuple[str, ...] = ("gtts", "espeak")
    gtts_url: str | None = None  # None: Google's own endpoint
    gtts_timeout_s: float = 5.0
    espeak_voice: str = "vi"
    espeak_rate: int = 140  # words per minute; espeak's default 175 is too fast for horns
    espeak_word_gap: int = 3  # extra pause between words, in units of 10 ms
    espeak_pitch: int = 45
    piper_model: str | None = None
    piper_command: str = "piper"
    abbreviations: Mapping[str, str] = field(default_factory=dict)
    max_chars: int = 20000
    piece_chars: int = 250
    sentence_gap_s: float = 0.35


@dataclass(frozen=True)
class Speech:
    """A spoken text: the WAV, the engine that spoke it, and the text as read."""

    path: Path
    engine: str
    voice: str
    text: str
    duration_s: float


class EngineUnavailable(Exception):
    """This engine cannot speak now (offline, not installed, not configured); try the next."""


def available(settings: TtsSettings) -> list[str]:
    """Engines usable on this machine, in the order they are tried."""
    out = []
    for name in _order(settings, None):
        if name == "espeak" and not shutil.which("espeak-ng"):
            continue
        if name == "piper" and not (settings.piper_model and Path(settings.piper_model).exists()):
            continue
        out.append(name)
    return out


GTTS_HOST = "translate.google.com"
_REACH_TTL_S = 60.0
_reach_lock = threading.Lock()
_reach_cache: dict[str, tuple[float, bool]] = {}


def gtts_reachable(settings: TtsSettings, *, timeout_s: float = 1.5) -> bool:
    """True when the online voice's server accepts a TCP connection now (answer kept for a minute).

    A connection is not a spoken text, but a controller cut off from the internet (the case that
    matters in a storm) fails here at once, so the emergency screen can say the offline voice would
    speak and offer recording or live voice first.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(settings.gtts_url) if settings.gtts_url else None
    host = (parts.hostname if parts else None) or GTTS_HOST
    port = (parts.port if parts else None) or (80 if parts is not None and parts.scheme == "http" else 443)
    key = f"{host}:{port}"
    now = time.monotonic()
    with _reach_lock:
        seen = _reach_cache.get(key)
        if seen is not None and now - seen[0] < _REACH_TTL_S:
            return seen[1]
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            ok = True
    except OSError:
        ok = False
    with _reach_lock:
        _reach_cache[key] = (time.monotonic(), ok)
    return ok


def _order(settings: TtsSettings, engine: str | None) -> list[str]:
    order = [e for e in settings.engines if e in ENGINES]
    if settings.piper_model and "piper" not in order:
        order.insert(0, "piper")
    if "espeak" not in order:
        order.append("espeak")  # the engine that always works offline is always the last resort
    if engine:
        order = [engine] + [e for e in order if e != engine]
    return order


def synthesize(text: str, workdir: Path, settings: TtsSettings | None = None, *, engine: str | None = None,
               voice: str | None = None) -> Speech:
    """Speak ``text`` into ``workdir``/speech.wav with the requested engine or the first that works.

    An engine that fails (Google unreachable or slow, no model) hands over to
    the next one; the result records which engine spoke.
    """
    s = settings or TtsSettings()
    if engine is not None and engine not in ENGINES:
        raise AudioError("tts.bad_engine", f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}",
                         "Bộ đọc không hợp lệ.")
    if voice is not None and voice not in ESPEAK_VOICES:
        raise AudioError("tts.bad_voice", f"unknown voice {voice!r}; use one of {', '.join(ESPEAK_VOICES)}",
                         "Giọng đọc không hợp lệ.")
    if not text or not text.strip():
        raise AudioError("tts.empty", "the text is empty", "Chưa nhập nội dung cần đọc.")
    if len(text) > s.max_chars:
        raise AudioError("tts.too_long", f"the text has {len(text)} characters, over {s.max_chars}",
                         f"Văn bản dài quá {s.max_chars} ký tự.")
    spoken = textnorm.normalise(text, s.abbreviations)
    pieces = textnorm.sentences(spoken, s.piece_chars)
    if not pieces:
        raise AudioError("tts.empty", "the text has nothing to read", "Văn bản không có gì để đọc.")
    workdir.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in _order(s, engine):
        speak, used_voice = _engine(name, s, voice)
        started = time.monotonic()
        try:
            files = []
            for i, piece in enumerate(pieces):
                files.append(speak(piece, workdir / f"piece-{name}-{i:04d}"))
        except EngineUnavailable as exc:
            logger.warning("tts engine %s unavailable after %.1fs: %s", name, time.monotonic() - started, exc)
            failures.append(f"{name}: {exc}")
            continue
        out = workdir / "speech.wav"
        items: list[assemble.Piece] = []
        for i, f in enumerate(files):
            if i:
                items.append(assemble.Gap(s.sentence_gap_s))
            items.append(f)
        duration = assemble.join(items, out)
        for f in files:
            f.unlink(missing_ok=True)
        logger.info("tts: %d pieces, %.1fs spoken by %s (%s)", len(pieces), duration, name, used_voice)
        return Speech(out, name, used_voice, spoken, duration)
    raise AudioError("tts.unavailable", "no text-to-speech engine worked: " + "; ".join(failures),
                     "Không có bộ đọc văn bản nào hoạt động.")


def _engine(name: str, s: TtsSettings, voice: str | None) -> tuple[Callable[[str, Path], Path], str]:
    if name == "gtts":
        return (lambda text, stem: _gtts(text, stem, s)), "vi"
    if name == "piper":
        return (lambda text, stem: _piper(text, stem, s)), Path(s.piper_model or "").name
    v = voice or s.espeak_voice
    return (lambda text, stem: _espeak(text, stem, s, v)), v


def _gtts(text: str, stem: Path, s: TtsSettings) -> Path:
    from gtts import gTTS, gTTSError

    class _Endpoint(gTTS):  # type: ignore[misc]  # gTTS ships no type information
        """gTTS sent to ``s.gtts_url`` when configured (a proxy, or a stand-in in tests)."""

        def _prepare_requests(self) -> Any:
            requests = super()._prepare_requests()
            if s.gtts_url:
                for r in requests:
                    r.prepare_url(s.gtts_url, None)
            return requests

    path = stem.with_suffix(".mp3")
    try:
        tts = _Endpoint(text, lang="vi", lang_check=False, timeout=(s.gtts_timeout_s, s.gtts_timeout_s))
        with open(path, "wb") as fh:
            tts.write_to_fp(fh)
    except (gTTSError, OSError, AssertionError, ValueError) as exc:
        path.unlink(missing_ok=True)
        raise EngineUnavailable(str(exc)[:200]) from exc
    if path.stat().st_size == 0:
        raise EngineUnavailable("empty answer")
    return path


def _espeak(text: str, stem: Path, s: TtsSettings, voice: str) -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EngineUnavailable("espeak-ng is not installed (apt install espeak-ng)")
    path = stem.with_suffix(".wav")
    proc = subprocess.run([exe, "-v", voice, "-s", str(s.espeak_rate), "-g", str(s.espeak_word_gap),
                           "-p", str(s.espeak_pitch), "-b", "1", "-w", str(path), "--stdin"],
                          input=text.encode("utf-8"), capture_output=True, timeout=120, check=False)
    if proc.returncode != 0 or not path.exists() or path.stat().st_size <= 44:
        raise EngineUnavailable(f"espeak-ng failed: {proc.stderr.decode('utf-8', 'replace')[:200]}")
    return path


def _piper(text: str, stem: Path, s: TtsSettings) -> Path:
    if not s.piper_model or not Path(s.piper_model).exists():
        raise EngineUnavailable("no Piper voice model configured (TTS_PIPER_MODEL)")
    exe = shutil.which(s.piper_command) or s.piper_command
    path = stem.with_suffix(".wav")
    try:
        proc = subprocess.run([exe, "--model", s.piper_model, "--output_file", str(path)],
                              input=text.encode("utf-8"), capture_output=True, timeout=300, check=False,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except OSError as exc:
        raise EngineUnavailable(f"cannot run {exe}: {exc}") from exc
    if proc.returncode != 0 or not path.exists():
        raise EngineUnavailable(f"piper failed: {proc.stderr.decode('utf-8', 'replace')[-200:]}")
    return path
