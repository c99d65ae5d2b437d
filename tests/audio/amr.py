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
NB_FRAME_BYTES = (12, 13, 15, 17, 19, 20, 26, 31, 5, 0, 0, 0, 0, 0, 0, 0)
"""Speech bytes after the one-byte header of each AMR-NB frame type (8 is SID, 15 NO_DATA)."""


def encode_amr(src_lavfi: str, dst: Path, kind: str, *, dtx: bool = False) -> Path:
    """Write ``dst`` as an AMR file (.amr storage format) of the lavfi source ``src_lavfi``.

    With ``dtx`` (AMR-NB only) the encoder sends silence as SID and NO_DATA frames, as phones do.
    """
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
    if dtx and kind != "nb":
        raise ValueError("DTX fixtures are AMR-NB only")
    state = getattr(lib, init)(int(dtx)) if kind == "nb" else getattr(lib, init)()
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


def nb_frame_types(path: Path) -> dict[int, int]:
    """How many frames of each type an AMR-NB file holds."""
    data = path.read_bytes()
    assert data.startswith(CODECS["nb"][7])
    pos, counts = len(CODECS["nb"][7]), {}
    while pos < len(data):
        kind = (data[pos] >> 3) & 15
        counts[kind] = counts.get(kind, 0) + 1
        pos += 1 + NB_FRAME_BYTES[kind]
    return counts
