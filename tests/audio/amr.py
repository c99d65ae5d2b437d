"""AMR-NB and AMR-WB fixtures: Debian's ffmpeg decodes AMR but cannot encode it, so the
encoders of libopencore-amrnb0 and libvo-amrwbenc0 are called through ctypes."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
from pathlib import Path

import pytest

from audio import ffmpeg

# (library, init, encode, exit, sample rate, samples per frame, mode, header)
CODECS = {
    "nb": ("opencore-amrnb", "Encoder_Interface_init", "Encoder_Interface_Encode", "Encoder_Interface_exit",
           8000, 160, 7, b"#!AMR\n"),
    "wb": ("vo-amrwbenc", "E_IF_init", "E_IF_encode", "E_IF_exit", 16000, 320, 8, b"#!AMR-WB\n"),
}
PACKAGES = {"nb": "libopencore-amrnb0", "wb": "libvo-amrwbenc0"}


def encode_amr(src_lavfi: str, dst: Path, kind: str) -> Path:
    """Write ``dst`` as an AMR file (.amr storage format) of the lavfi source ``src_lavfi``."""
    lib_name, init, encode, exit_, rate, frame, mode, header = CODECS[kind]
    found = ctypes.util.find_library(lib_name)
    if found is None:
        pytest.fail(f"AMR fixtures need {PACKAGES[kind]} (apt install {PACKAGES[kind]})")
    lib = ctypes.CDLL(found)
    getattr(lib, init).restype = ctypes.c_void_p
    getattr(lib, encode).argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                                     ctypes.c_char_p, ctypes.c_int]
    getattr(lib, exit_).argtypes = [ctypes.c_void_p]
    pcm = subprocess.run([ffmpeg.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", src_lavfi, "-ac", "1",
                          "-ar", str(rate), "-f", "s16le", "-"], check=True, capture_output=True).stdout
    state = getattr(lib, init)(0) if kind == "nb" else getattr(lib, init)()
    out = bytearray(header)
    buf = ctypes.create_string_buffer(64)
    try:
        for start in range(0, len(pcm) - frame * 2 + 1, frame * 2):
            samples = (ctypes.c_short * frame).from_buffer_copy(pcm[start:start + frame * 2])
            n = getattr(lib, encode)(state, mode, samples, buf, 0)
            out += buf.raw[:n]
    finally:
        getattr(lib, exit_)(state)
    dst.write_bytes(bytes(out))
    return dst
