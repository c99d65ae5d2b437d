"""The only module that runs ffmpeg and ffprobe.

Binaries come from ``LOAXA_FFMPEG`` / ``LOAXA_FFPROBE``, else the system PATH,
else the ffmpeg shipped by the imageio-ffmpeg wheel (which has no ffprobe:
probing then parses ``ffmpeg -i`` output).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ffmpeg as ffmpeg_python

from audio.errors import AudioError

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_AUDIO_STREAM = re.compile(r"Stream #\S+(?:\([^)]*\))?: Audio: (\w+)[^,\n]*, (\d+) Hz, ([^,\n]+)")
_INPUT_FORMAT = re.compile(r"Input #0, ([^,]+(?:,[^,]+)*?), from")
_TIME = re.compile(r"time=(\d+):(\d\d):(\d\d(?:\.\d+)?)")


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to use."""
    env = os.environ.get("LOAXA_FFMPEG")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - only on a broken install
        raise AudioError("audio.no_ffmpeg", "ffmpeg not found; is ffmpeg installed?",
                         "Không tìm thấy ffmpeg trên máy chủ.") from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


@lru_cache(maxsize=1)
def ffprobe_exe() -> str | None:
    """Path of ffprobe, or None when only ffmpeg is available."""
    env = os.environ.get("LOAXA_FFPROBE")
    if env:
        return env or None
    if os.environ.get("LOAXA_FFMPEG"):
        return None
    return shutil.which("ffprobe")


@dataclass(frozen=True)
class ProbeResult:
    """What an input file holds."""

    format_name: str
    codec: str | None
    channels: int | None
    sample_rate: int | None
    duration_s: float | None

    @property
    def has_audio(self) -> bool:
        """True when the file has at least one audio stream."""
        return self.codec is not None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
    except OSError:
        logger.error("cannot run %s: is it installed?", args[0])
        raise
    except subprocess.TimeoutExpired as exc:
        raise AudioError("audio.timeout", f"{Path(args[0]).name} timed out after {timeout}s",
                         "Xử lý âm thanh quá lâu, đã dừng.") from exc


def probe(path: Path) -> ProbeResult:
    """Describe ``path``; raises AudioError ``audio.undecodable`` when ffmpeg cannot read it."""
    exe = ffprobe_exe()
    if exe:
        proc = _run([exe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)], 60)
        if proc.returncode != 0:
            raise AudioError("audio.undecodable", f"ffprobe cannot read the file: {proc.stderr.strip()[:300]}",
                             "Tệp không đọc được hoặc không phải tệp âm thanh.")
        return _from_ffprobe_json(json.loads(proc.stdout or "{}"))
    proc = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], 60)
    return parse_ffmpeg_banner(proc.stderr)


def _from_ffprobe_json(data: dict) -> ProbeResult:
    fmt = data.get("format", {})
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    duration = fmt.get("duration") or (audio or {}).get("duration")
    return ProbeResult(
        format_name=str(fmt.get("format_name", "")),
        codec=audio.get("codec_name") if audio else None,
        channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        duration_s=float(duration) if duration not in (None, "N/A") else None,
    )


def parse_ffmpeg_banner(stderr: str) -> ProbeResult:
    """Read a ProbeResult from what ``ffmpeg -i FILE`` prints (no ffprobe needed)."""
    fmt = _INPUT_FORMAT.search(stderr)
    if not fmt:
        raise AudioError("audio.undecodable", "ffmpeg cannot read the file",
                         "Tệp không đọc được hoặc không phải tệp âm thanh.")
    dur = _DURATION.search(stderr)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None
    stream = _AUDIO_STREAM.search(stderr)
    channels = None
    if stream:
        layout = stream.group(3).strip()
        channels = {"mono": 1, "stereo": 2}.get(layout)
        if channels is None:
            m = re.match(r"(\d+) channels", layout)
            channels = int(m.group(1)) if m else None
    return ProbeResult(
        format_name=fmt.group(1),
        codec=stream.group(1) if stream else None,
        channels=channels,
        sample_rate=int(stream.group(2)) if stream else None,
        duration_s=duration,
    )


def transcode_mono_mp3(src: Path, dst: Path, *, bitrate: str = "48k", sample_rate: int = 44100,
                       max_duration_s: float | None = None) -> None:
    """Stream ``src`` through ffmpeg into mono MP3 at ``dst`` (memory does not grow with length)."""
    stream = ffmpeg_python.input(str(src), **({"t": max_duration_s} if max_duration_s else {}))
    graph = (
        stream.audio.filter("aformat", channel_layouts="mono")
        .output(str(dst), acodec="libmp3lame", audio_bitrate=bitrate, ar=sample_rate, ac=1, f="mp3",
                map_metadata=-1, vn=None)
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .overwrite_output()
    )
    proc = _run(graph.compile(cmd=ffmpeg_exe()), 3 * 3600)
    if proc.returncode != 0:
        raise AudioError("audio.transcode_failed", f"ffmpeg failed: {proc.stderr.strip()[:300]}",
                         "Chuyển đổi âm thanh thất bại.")


def decoded_duration(path: Path) -> float:
    """Duration in seconds obtained by decoding the whole file (exact, not from headers)."""
    proc = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-f", "null", "-"], 3 * 3600)
    times = _TIME.findall(proc.stderr)
    if proc.returncode != 0 or not times:
        raise AudioError("audio.undecodable", "ffmpeg cannot decode the file",
                         "Tệp không giải mã được.")
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def generate_tone(dst: Path, seconds: float, frequency: int = 440) -> None:
    """Write a test tone (beeps of ``frequency`` Hz) as MP3: demo and test material."""
    expr = f"sin(2*PI*{frequency}*t)*0.5*lt(mod(t\\,1)\\,0.6)"
    proc = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                 "-i", f"aevalsrc={expr}:s=44100:d={seconds}", "-ac", "2", "-c:a", "libmp3lame",
                 "-b:a", "128k", str(dst)], 300)
    if proc.returncode != 0:
        raise AudioError("audio.transcode_failed", f"ffmpeg failed: {proc.stderr.strip()[:300]}",
                         "Tạo âm thanh thử thất bại.")
