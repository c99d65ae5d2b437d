"""ffmpeg and ffprobe for files (through ffmpeg-python's graphs); :mod:`audio.live` runs the long-lived
live encoders with the binary found here. No module outside ``audio/`` runs ffmpeg on the controller.

Pass 1 (:func:`measure`) and pass 2 (:func:`normalise_encode`) of the
normalising pipeline live here, with ``-progress`` parsing for job progress.

Binaries come from ``LOAXA_FFMPEG`` / ``LOAXA_FFPROBE``, else the system PATH,
else the ffmpeg shipped by the imageio-ffmpeg wheel (which has no ffprobe:
probing then parses ``ffmpeg -i`` output).

Inputs are untrusted: every probe and decode of a file is limited to the
``file`` and ``pipe`` protocols and to the demuxers in :data:`DEMUXERS`, and a
decode names the demuxer the probe found, so that a playlist (HLS, concat) or
any other demuxer that opens further files or URLs is never selected. Messages
that reach API clients never carry a server path (see :func:`audio.errors.strip_paths`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python

from audio.errors import AudioError, strip_paths

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_AUDIO_STREAM = re.compile(r"Stream #\S+(?:\([^)]*\))?: Audio: (\w+)[^,\n]*, (\d+) Hz, ([^,\n]+)")
_INPUT_FORMAT = re.compile(r"Input #0, ([^,]+(?:,[^,]+)*?), from")
_INTEGRATED = re.compile(r"Integrated loudness:\s+I:\s+(-?[\d.]+|-inf) LUFS")
_PEAK = re.compile(r"(?:Sample|True) peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS")
_SILENCE_START = re.compile(r"silence_start: (-?[\d.]+)")
_SILENCE_END = re.compile(r"silence_end: (-?[\d.]+)")
_ESTIMATED = re.compile(r"Estimating duration from bitrate")
_CLOCK = re.compile(r"Parsed_ashowinfo\S* @ \S+\] n:\s*\d+ pts:\s*-?\d+ pts_time:\s*(-?[\d.]+)")
_DECODE_ERROR = re.compile(r"Header missing|Invalid data found when processing input|Error while decoding|"
                           r"incomplete frame|Packet corrupt|partial file|invalid frame|overread", re.IGNORECASE)

DEMUXERS = ("mp3", "wav", "mov", "mp4", "m4a", "3gp", "amr", "ogg", "flac", "asf", "matroska", "webm", "aac")
"""Demuxers an input may be read with (ffmpeg's names; ``mov`` is also mp4/m4a/3gp, ``asf`` is wma).
Playlists (hls, concat), image sequences and everything that can open other files or URLs are left out."""
PROTOCOLS = "file,pipe"
"""The only protocols ffmpeg may open for an input."""
_SAFE_INPUT = {"protocol_whitelist": PROTOCOLS, "format_whitelist": ",".join(DEMUXERS)}
_SAFE_INPUT_ARGS = ["-protocol_whitelist", PROTOCOLS, "-format_whitelist", ",".join(DEMUXERS)]
END_WINDOW_S = 1.5
"""Decoder errors this close to the end of the decoded audio are taken as a file cut short."""
CLOCK_S = 0.5
"""Pass 1 logs where its decode is every CLOCK_S seconds (from the envelope branch, at 1 kHz: cheap)."""

ENVELOPE_RATE = 1000
Progress = Callable[[float], None]
"""Called with the fraction done (0..1) while ffmpeg runs."""


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
    audio_duration_s: float | None = None
    """The audio stream's own duration when the container states one (a video may run longer)."""
    duration_estimated: bool = False
    """True when ffmpeg guessed the duration from the bitrate (no header states it)."""

    @property
    def has_audio(self) -> bool:
        """True when the file has at least one audio stream."""
        return self.codec is not None

    @property
    def demuxer(self) -> str | None:
        """The demuxer to force when decoding this file, or None when it is not an accepted one."""
        return demuxer_of(self.format_name)


def demuxer_of(format_name: str) -> str | None:
    """ffmpeg's name for the demuxer that read ``format_name`` (``mov`` for ``mov,mp4,m4a,...``) when it is
    in :data:`DEMUXERS`, else None."""
    first = format_name.split(",", 1)[0].strip().lower()
    return first if first in DEMUXERS else None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
    except OSError:
        logger.error("cannot run %s: is it installed?", args[0])
        raise
    except subprocess.TimeoutExpired as exc:
        raise AudioError("audio.timeout", f"{Path(args[0]).name} timed out after {timeout}s",
                         "Xử lý âm thanh quá lâu, đã dừng.") from exc


def _client_text(stderr: str, path: Path, limit: int = 300) -> str:
    """ffmpeg's last words about ``path``, fit for an API client: no path of this server in them."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    text = " | ".join(lines[-2:]).replace(str(path), "input")
    return strip_paths(text)[-limit:]


def probe(path: Path) -> ProbeResult:
    """Describe ``path`` with the accepted demuxers only; raises AudioError ``audio.undecodable`` when
    ffmpeg cannot read it (or reads it only with a demuxer outside :data:`DEMUXERS`)."""
    exe = ffprobe_exe()
    if exe:
        proc = _run([exe, "-v", "warning", *_SAFE_INPUT_ARGS, "-print_format", "json", "-show_format",
                     "-show_streams", str(path)], 60)
        if proc.returncode != 0:
            logger.debug("ffprobe cannot read %s: %s", path, proc.stderr.strip()[-500:])
            raise AudioError("audio.undecodable", f"ffprobe cannot read the file: {_client_text(proc.stderr, path)}",
                             "Tệp không đọc được hoặc không phải tệp âm thanh.")
        info = _from_ffprobe_json(json.loads(proc.stdout or "{}"))
        return _with_estimate(info, proc.stderr)
    proc = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", *_SAFE_INPUT_ARGS, "-i", str(path)], 60)
    try:
        return parse_ffmpeg_banner(proc.stderr)
    except AudioError:
        logger.debug("ffmpeg cannot read %s: %s", path, proc.stderr.strip()[-500:])
        raise


def _with_estimate(info: ProbeResult, stderr: str) -> ProbeResult:
    if not _ESTIMATED.search(stderr):
        return info
    return replace(info, duration_estimated=True)


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float, str)) and value not in ("N/A", "") else None


def _from_ffprobe_json(data: dict[str, Any]) -> ProbeResult:
    fmt = data.get("format", {})
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    duration = fmt.get("duration") or (audio or {}).get("duration")
    return ProbeResult(
        format_name=str(fmt.get("format_name", "")),
        codec=audio.get("codec_name") if audio else None,
        channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        duration_s=_seconds(duration),
        audio_duration_s=_seconds((audio or {}).get("duration")),
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
        duration_estimated=bool(_ESTIMATED.search(stderr)),
    )


def generate_tone(dst: Path, seconds: float, frequency: int = 440) -> None:
    """Write a test tone (beeps of ``frequency`` Hz) as MP3: demo and test material."""
    expr = f"sin(2*PI*{frequency}*t)*0.5*lt(mod(t\\,1)\\,0.6)"
    proc = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                 "-i", f"aevalsrc={expr}:s=44100:d={seconds}", "-ac", "2", "-c:a", "libmp3lame",
                 "-b:a", "128k", str(dst)], 300)
    if proc.returncode != 0:
        raise AudioError("audio.transcode_failed", f"ffmpeg failed: {proc.stderr.strip()[:300]}",
                         "Tạo âm thanh thử thất bại.")


def generate_chime(dst: Path, notes_hz: tuple[float, ...], *, note_s: float = 0.45, ring_s: float = 1.2,
                   rate: int = 24000) -> float:
    """Write a chime (struck notes, one after another, each ringing out) as mono 16-bit WAV; its seconds.

    Each note is a sine with its octave at a third of the level, starting
    ``note_s`` after the one before and decaying over ``ring_s``: the sound of
    the bell chime that opens and closes a public announcement. Made here, so
    the project owns it outright.
    """
    if not notes_hz or any(not 50 <= f <= 5000 for f in notes_hz):
        raise ValueError("chime notes must be 50-5000 Hz")
    total = note_s * (len(notes_hz) - 1) + ring_s
    terms = []
    for i, f in enumerate(notes_hz):
        t0 = i * note_s
        terms.append(f"between(t\\,{t0:.3f}\\,{total:.3f})*exp(-4*(t-{t0:.3f})/{ring_s:.3f})"
                     f"*(sin(2*PI*{f:.2f}*t)+0.33*sin(4*PI*{f:.2f}*t))")
    expr = "0.28*(" + "+".join(terms) + ")"
    proc = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                 "-i", f"aevalsrc={expr}:s={rate}:d={total:.3f}", "-ac", "1", "-c:a", "pcm_s16le", str(dst)], 60)
    if proc.returncode != 0:
        raise AudioError("audio.transcode_failed", f"ffmpeg failed: {proc.stderr.strip()[:300]}",
                         "Tạo tiếng chuông thất bại.")
    return total


@dataclass(frozen=True)
class Loudness:
    """An EBU R128 measurement of a mono signal."""

    integrated_lufs: float
    peak_db: float


@dataclass(frozen=True)
class Measurement:
    """What the first pass learned: loudness, decoded duration, and silence at both ends."""

    loudness: Loudness
    duration_s: float
    lead_silence_s: float = 0.0
    trail_silence_s: float = 0.0
    end_errors: int = 0
    """Decoder errors in the last :data:`END_WINDOW_S` of the decode (a file cut short, usually)."""


@dataclass(frozen=True)
class Encoding:
    """The distribution format: codec, container, bitrate, sample rate."""

    format: str = "mp3"  # mp3 | opus
    bitrate: str = "48k"
    sample_rate: int = 44100

    @property
    def extension(self) -> str:
        """File extension of this format."""
        return "opus" if self.format == "opus" else "mp3"

    def output_args(self) -> dict[str, Any]:
        """ffmpeg output options for this format."""
        if self.format == "opus":
            return {"acodec": "libopus", "audio_bitrate": self.bitrate, "ar": 48000, "ac": 1, "f": "ogg",
                    "application": "voip"}
        return {"acodec": "libmp3lame", "audio_bitrate": self.bitrate, "ar": self.sample_rate, "ac": 1, "f": "mp3"}


def _float_or_inf(text: str) -> float:
    return float("-inf") if text == "-inf" else float(text)


def parse_ebur128_summary(stderr: str) -> Loudness | None:
    """Integrated loudness and peak from the summary the ebur128 filter logs at the end."""
    i = _INTEGRATED.findall(stderr)
    p = _PEAK.findall(stderr)
    if not i:
        return None
    return Loudness(_float_or_inf(i[-1]), _float_or_inf(p[-1]) if p else float("-inf"))


def parse_silences(stderr: str, duration_s: float, *, keep_s: float = 0.25) -> tuple[float, float]:
    """Seconds of silence to trim at the start and at the end, from silencedetect's log.

    ``keep_s`` of each silence is kept so that speech does not start abruptly.
    """
    starts = [float(x) for x in _SILENCE_START.findall(stderr)]
    ends = [float(x) for x in _SILENCE_END.findall(stderr)]
    lead = trail = 0.0
    if starts and ends and starts[0] <= 0.05:
        lead = max(0.0, ends[0] - keep_s)
    if starts and ends and len(ends) >= len(starts) and ends[-1] >= duration_s - 0.05 and starts[-1] > 0.05:
        trail = max(0.0, duration_s - starts[-1] - keep_s)
    if duration_s - lead - trail < 0.5 + 2 * keep_s:  # (nearly) all silence: leave it whole
        return 0.0, 0.0
    return lead, trail


def count_end_errors(stderr: str, duration_s: float, *, window_s: float = END_WINDOW_S) -> int:
    """Decoder and demuxer errors logged when the decode was within ``window_s`` of its end.

    Where the decode was is read from the clock that pass 1 logs (an
    ``ashowinfo`` line every :data:`CLOCK_S` of audio); without that clock
    nothing counts, since an error could then be anywhere.
    """
    clock: float | None = None
    count = 0
    for line in stderr.splitlines():
        t = _CLOCK.search(line)
        if t:
            clock = float(t.group(1)) + CLOCK_S
        elif clock is not None and _DECODE_ERROR.search(line) and clock >= duration_s - window_s:
            count += 1
    return count


def run_with_progress(args: list[str], *, duration_s: float | None, on_progress: Progress | None,
                      timeout: float) -> tuple[int, str, float]:
    """Run ffmpeg with ``-progress pipe:1``; return (exit code, stderr, last out_time in seconds).

    stderr goes to an unnamed temporary file so that neither pipe can fill up,
    and a timer kills ffmpeg after ``timeout`` seconds.
    """
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        except OSError:
            logger.error("cannot run %s: is it installed?", args[0])
            raise
        started = time.monotonic()
        timer = threading.Timer(timeout, proc.kill)
        timer.daemon = True
        timer.start()
        out_time = 0.0
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                key, _, value = raw.decode("ascii", "replace").strip().partition("=")
                if key == "out_time_us" and value.isdigit():
                    out_time = int(value) / 1e6
                    if on_progress and duration_s:
                        on_progress(min(1.0, out_time / duration_s))
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if code != 0 and time.monotonic() - started >= timeout:
        raise AudioError("audio.timeout", f"ffmpeg timed out after {timeout:.0f}s", "Xử lý âm thanh quá lâu, đã dừng.")
    if code < 0:
        logger.error("ffmpeg died of signal %d: %s", -code, " ".join(args[:6]))
        raise AudioError("audio.ffmpeg_crashed", f"ffmpeg crashed (signal {-code})",
                         "Bộ xử lý âm thanh bị lỗi đột ngột; hãy thử lại.")
    return code, stderr, out_time


_GLOBAL = ("-hide_banner", "-nostdin", "-nostats", "-progress", "pipe:1", "-loglevel", "info")


def _input(src: Path, input_format: str | None, **kwargs: Any) -> Any:
    """An ffmpeg-python input node for an untrusted file: file and pipe protocols and the accepted
    demuxers only, and the demuxer the probe found when it is known."""
    if input_format is not None and input_format not in DEMUXERS:
        raise AudioError("audio.unsupported_format", f"the {input_format} format is not accepted",
                         "Định dạng tệp này không được chấp nhận.")
    return ffmpeg_python.input(str(src), **_SAFE_INPUT, **({"f": input_format} if input_format else {}), **kwargs)


def _mono(stream: Any, highpass_hz: float, lowpass_hz: float = 0) -> Any:
    """Downmix first (every later filter then runs on one channel), in float, then the speech band.

    ``aresample=async=1`` then fills gaps in the timestamps with silence: an
    AMR voice note's DTX frames (SID, NO_DATA) decode to nothing, and without
    it the silence between two sentences would vanish from the output.
    The low-pass keeps what a horn speaker reproduces and what the encoder
    keeps at 48 kbps, so that the loudness measured in pass 1 is the loudness
    that comes out.
    """
    mono = (stream.audio.filter("aformat", sample_fmts="flt", channel_layouts="mono")
            .filter("aresample", **{"async": 1}))
    if highpass_hz > 0:
        mono = mono.filter("highpass", f=highpass_hz)
    if lowpass_hz > 0:
        mono = mono.filter("lowpass", f=lowpass_hz)
    return mono


def measure(src: Path, *, highpass_hz: float, max_duration_s: float, lowpass_hz: float = 0,
            trim_silence: bool = False, envelope_file: Path | None = None,
            on_progress: Progress | None = None, expected_s: float | None = None,
            input_format: str | None = None) -> Measurement:
    """First pass: integrated loudness and sample peak (EBU R128) of the mono, band-limited signal.

    Reads at most ``max_duration_s`` + 1 s, so a file claiming hours in its
    headers costs no more than the limit; the caller compares the decoded
    duration with the limit. With ``envelope_file``, the same decode also
    writes a 1 kHz 16-bit envelope there for the waveform (nearly free here,
    unlike a branch in pass 2), and logs the position of the decode every
    :data:`CLOCK_S`, so that decoder errors at the very end (a file cut
    short) are told from errors elsewhere. ``input_format`` is the demuxer the probe found.
    """
    stream = _mono(_input(src, input_format, t=max_duration_s + 1), highpass_hz, lowpass_hz)
    if trim_silence:
        stream = stream.filter("silencedetect", n="-50dB", d=0.4)
    stream = stream.filter("ebur128", peak="sample", framelog="verbose")
    if envelope_file is None:
        out = stream.output("-", f="null")
    else:
        out = (stream.filter("aresample", ENVELOPE_RATE, filter_size=1)
               .filter("asetnsamples", n=int(ENVELOPE_RATE * CLOCK_S), p=0).filter("ashowinfo")).output(
            str(envelope_file), f="s16le", acodec="pcm_s16le", ac=1).overwrite_output()
    graph = out.global_args(*_GLOBAL)
    code, stderr, out_time = run_with_progress(graph.compile(cmd=ffmpeg_exe()), duration_s=expected_s,
                                               on_progress=on_progress, timeout=max_duration_s + 600)
    loudness = parse_ebur128_summary(stderr)
    if code != 0 or loudness is None:
        logger.warning("measure %s failed (exit %s): %s", src.name, code, _tail(stderr))
        raise AudioError("audio.undecodable", f"ffmpeg cannot decode the file (exit {code})",
                         "Tệp không giải mã được (hỏng hoặc bị cắt cụt).")
    lead, trail = parse_silences(stderr, out_time) if trim_silence else (0.0, 0.0)
    return Measurement(loudness, out_time, lead, trail, count_end_errors(stderr, out_time))


def normalise_encode(src: Path, dst: Path, *, gain_db: float, limit_db: float, highpass_hz: float,
                     lowpass_hz: float = 0, encoding: Encoding, max_duration_s: float, start_s: float = 0.0,
                     end_s: float | None = None, on_progress: Progress | None = None,
                     expected_s: float | None = None, input_format: str | None = None) -> float:
    """Second pass: mono, band-limit, trim, one linear gain, a lookahead peak limiter, encode.

    Returns the duration ffmpeg reports having written, in seconds (:func:`output_duration`
    measures the file itself). ``input_format`` is the demuxer the probe found.
    """
    stream = _mono(_input(src, input_format, t=max_duration_s + 1), highpass_hz, lowpass_hz)
    if start_s > 0 or end_s is not None:
        stream = stream.filter("atrim", **({"start": start_s} if start_s > 0 else {}),
                               **({"end": end_s} if end_s is not None else {})).filter("asetpts", "PTS-STARTPTS")
    limit = min(1.0, max(0.0625, 10 ** (limit_db / 20)))
    stream = (stream.filter("volume", volume=f"{gain_db:.2f}dB")
              .filter("alimiter", limit=f"{limit:.5f}", attack=5, release=50, level=0, latency=1))
    graph = (stream.output(str(dst), map_metadata=-1, **encoding.output_args())
             .global_args(*_GLOBAL).overwrite_output())
    code, stderr, out_time = run_with_progress(graph.compile(cmd=ffmpeg_exe()), duration_s=expected_s,
                                               on_progress=on_progress, timeout=max_duration_s + 600)
    if code != 0:
        logger.warning("encode %s failed (exit %s): %s", src, code, _tail(stderr))
        tail = _tail(stderr).replace(str(src), "input").replace(str(dst), "output")
        raise AudioError("audio.transcode_failed", f"ffmpeg failed (exit {code}): {strip_paths(tail)}",
                         "Chuyển đổi âm thanh thất bại.")
    return out_time


def output_duration(path: Path, *, timeout: float = 3600) -> float:
    """Seconds of audio a file this module wrote really holds: it is decoded (an MP3 of an hour in
    about 2 s here), since headers count the encoder's padding and ffmpeg's own report of what
    it wrote follows the input's timestamps, gaps included."""
    graph = _input(path, None).audio.output("-", f="null").global_args(*_GLOBAL)
    code, stderr, out_time = run_with_progress(graph.compile(cmd=ffmpeg_exe()), duration_s=None, on_progress=None,
                                               timeout=timeout)
    if code != 0:
        logger.warning("cannot decode the output %s (exit %s): %s", path, code, _tail(stderr))
        raise AudioError("audio.transcode_failed", f"the encoded file cannot be decoded (exit {code})",
                         "Chuyển đổi âm thanh thất bại.")
    return out_time


def envelope(path: Path, buckets: int = 800, *, start_s: float = 0.0, end_s: float | None = None,
             rate: int | None = None) -> list[float]:
    """Peaks (0..1, two decimals) in ``buckets`` slices of a raw s16le mono file, between
    ``start_s`` and ``end_s``; read in chunks, so memory stays flat."""
    import array

    rate = rate or ENVELOPE_RATE
    total = path.stat().st_size // 2
    first = min(total, int(start_s * rate))
    last = total if end_s is None else min(total, int(end_s * rate))
    size = last - first
    if size <= 0:
        return []
    per = max(1, -(-size // buckets))
    out: list[float] = []
    with open(path, "rb") as fh:
        fh.seek(first * 2)
        remaining = size
        while remaining > 0:
            chunk = fh.read(min(per, remaining) * 2)
            if len(chunk) < 2:
                break
            remaining -= len(chunk) // 2
            samples = array.array("h")
            samples.frombytes(chunk[: len(chunk) // 2 * 2])
            out.append(round(max(max(samples), -min(samples)) / 32768, 2))
    return out


def measure_output(path: Path) -> Loudness:
    """An independent EBU R128 measurement with true peak (tests and benchmarks)."""
    graph = (_input(path, None).audio.filter("ebur128", peak="true", framelog="verbose")
             .output("-", f="null").global_args("-hide_banner", "-nostdin", "-nostats"))
    proc = _run(graph.compile(cmd=ffmpeg_exe()), 3 * 3600)
    loudness = parse_ebur128_summary(proc.stderr)
    if proc.returncode != 0 or loudness is None:
        raise AudioError("audio.undecodable", "ffmpeg cannot decode the file", "Tệp không giải mã được.")
    return loudness


def _tail(stderr: str, limit: int = 300) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if "Parsed_ebur128" not in ln]
    return " | ".join(lines[-3:])[-limit:]


def decode_pcm(path: Path, *, sample_rate: int = 24000, max_duration_s: float = 900) -> bytes:
    """Decode a short piece (a sentence, a jingle) to mono 16-bit PCM; longer pieces are refused.

    Only the accepted demuxers and the file protocol may read it, as for uploads.
    """
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *_SAFE_INPUT_ARGS,
                           "-i", str(path), "-t", str(max_duration_s + 0.5), "-vn", "-ac", "1",
                           "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"],
                          capture_output=True, timeout=max_duration_s + 60, check=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        logger.debug("ffmpeg cannot decode %s: %s", path, stderr.strip()[-500:])
        raise AudioError("audio.undecodable", f"ffmpeg cannot decode a piece to assemble: "
                         f"{_client_text(stderr, path, 200)}", "Tệp không giải mã được.")
    if len(proc.stdout) > max_duration_s * sample_rate * 2:
        logger.debug("piece %s is longer than %.0fs", path, max_duration_s)
        raise AudioError("assembly.piece_too_long", f"a piece to assemble is longer than {max_duration_s:.0f}s",
                         f"Đoạn âm thanh dài quá {max_duration_s / 60:.0f} phút để ghép.")
    return proc.stdout
