"""Benchmark: the normalising pipeline against raw ffmpeg, single-pass loudnorm and pydub.

    .venv/bin/python bench/transcode.py [--minutes 60 180] [--workdir DIR] [--full]

Makes stereo 44.1 kHz MP3 inputs of the given lengths (speech-like, cached in
the work directory), then for each measures wall time and peak RSS (the sum
over the process tree, sampled) of:

  a) raw   ffmpeg -i in -ac 1 -c:a libmp3lame -b:a 48k out   (the baseline)
  b) pipeline  audio.pipeline.prepare with the controller's default settings
  c) loudnorm  ffmpeg's single-pass loudnorm filter, mono, 48 kbps
  d) pydub     AudioSegment.from_file(...).export(...)

and prints the ratios b/a, c/a, d/a, of wall time and of CPU time (user + system of
the process tree, which other load on a shared machine disturbs less). Raw
and pipeline run ``--repeat`` times, alternating; the fastest run counts.
c and d run on the shortest input only
unless --full is given (pydub needs about 1.9 GB per hour of audio).
Not a test: nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audio import ffmpeg  # noqa: E402

SPEECHLIKE = ("aevalsrc=0.25*sin(2*PI*(180+40*sin(2*PI*0.7*t))*t)*(0.5+0.5*sin(2*PI*4*t))"
              "+0.12*sin(2*PI*1200*t)*(0.5+0.5*sin(2*PI*6*t))|0.22*sin(2*PI*190*t)*(0.5+0.5*sin(2*PI*3*t))"
              ":s=44100:d=300")



def make_input(workdir: Path, minutes: int) -> Path:
    """A stereo 44.1 kHz 128 kbps MP3 of ``minutes`` (five-minute speech-like block with noise, looped)."""
    out = workdir / f"input-{minutes}min.mp3"
    if out.exists():
        return out
    block = workdir / "block.wav"
    if not block.exists():
        subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", SPEECHLIKE,
                        "-f", "lavfi", "-i", "anoisesrc=c=pink:a=0.01:r=44100:d=300",
                        "-filter_complex", "[1]aformat=channel_layouts=stereo[n];[0][n]amix=inputs=2:normalize=0",
                        "-ac", "2", str(block)], check=True)
    loops = minutes // 5 - 1
    subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-y", "-stream_loop", str(loops), "-i", str(block),
                    "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k", str(out)], check=True)
    return out


def one(method: str, src: Path, workdir: Path) -> None:
    """Run one method in this process (called as a child by :func:`measure`)."""
    exe = ffmpeg.ffmpeg_exe()
    if method == "raw":
        subprocess.run([exe, "-loglevel", "error", "-y", "-i", str(src), "-ac", "1", "-c:a", "libmp3lame",
                        "-b:a", "48k", str(workdir / "raw.mp3")], check=True)
    elif method == "loudnorm":
        subprocess.run([exe, "-loglevel", "error", "-y", "-i", str(src), "-af", "loudnorm=I=-16:TP=-1.5",
                        "-ac", "1", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "48k",
                        str(workdir / "loudnorm.mp3")], check=True)
    elif method == "pydub":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pydub import AudioSegment
        AudioSegment.from_file(str(src)).set_channels(1).export(str(workdir / "pydub.mp3"), format="mp3",
                                                                bitrate="48k")
    elif method == "pipeline":
        from audio import pipeline
        from controller.config import DEFAULTS
        from controller.services.catalogue import pipeline_settings

        prepared = pipeline.prepare(src, workdir / "store", settings=pipeline_settings(DEFAULTS))
        print(json.dumps({"in_lufs": prepared.loudness_in_lufs, "out_lufs": prepared.loudness_lufs,
                          "out_peak_db": prepared.peak_db}), file=sys.stderr)
    else:
        raise SystemExit(f"unknown method {method}")


def measure(method: str, src: Path, workdir: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system of the whole process tree) and peak RSS in MB
    (the tree's sum, sampled every 50 ms) of running ``method`` in a child process."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--one", method, str(src), "--workdir", str(workdir)])
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                total = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{method} failed with exit {code}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, peak / 1e6



def main() -> None:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, nargs="+", default=[60, 180])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--full", action="store_true", help="run loudnorm and pydub on every input")
    ap.add_argument("--repeat", type=int, default=2, help="runs of raw and pipeline, alternating; the fastest counts")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "SRC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.gettempdir()) / "loaxa-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    if args.one:
        one(args.one[0], Path(args.one[1]), workdir)
        return
    import os

    print(f"ffmpeg {ffmpeg.ffmpeg_exe()}, {os.cpu_count()} CPUs, work dir {workdir}")
    inputs = [make_input(workdir, m) for m in args.minutes]
    for minutes, src in zip(args.minutes, inputs, strict=True):
        methods = ["raw", "pipeline"]
        if args.full or minutes == min(args.minutes):
            methods += ["loudnorm", "pydub"]
        store = workdir / "store"
        if store.exists():
            for old in store.iterdir():
                old.unlink()
        results = {}
        for _ in range(args.repeat):  # alternate raw and pipeline so that both see the same disturbances
            for m in ("raw", "pipeline"):
                run = measure(m, src, workdir)
                old = results.get(m, run)
                results[m] = (min(old[0], run[0]), min(old[1], run[1]), max(old[2], run[2]))
        for m in methods[2:]:
            results[m] = measure(m, src, workdir)
        base, base_cpu = results["raw"][0], results["raw"][1]
        print(f"\n{minutes}-minute stereo 44.1 kHz MP3 ({src.stat().st_size / 1e6:.0f} MB)")
        for out in store.glob("*.mp3"):  # measured after, untimed, by an independent ebur128 pass
            loud = ffmpeg.measure_output(out)
            print(f"pipeline output: {loud.integrated_lufs:.1f} LUFS, {loud.peak_db:.1f} dBTP")
        print(f"{'method':<12} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>12} {'wall/raw':>9} {'CPU/raw':>8}")
        for m, (wall, cpu, rss) in results.items():
            label = {"raw": "a) raw", "pipeline": "b) pipeline", "loudnorm": "c) loudnorm", "pydub": "d) pydub"}[m]
            print(f"{label:<12} {wall:7.1f} {cpu:7.1f} {rss:12.0f} {wall / base:9.2f} {cpu / base_cpu:8.2f}")


if __name__ == "__main__":
    main()
