"""Vietnamese text normalisation before speech: the only module that imports g2p-hamster.

g2p-hamster's rule layer (``g2p_hamster.t0``, pure Python, Apache-2.0, pinned
in setup.cfg) reads numbers, ordinals, dates, times, money, percentages and
phone numbers (digit by digit) and expands common abbreviations. On top of it
sits an abbreviation table for commune radio that operators extend through
the ``TTS_ABBREVIATIONS`` setting; it is applied first, so it wins.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

logger = logging.getLogger(__name__)

ABBREVIATIONS: dict[str, str] = {
    # Spelled out letter by letter by g2p-hamster 0.2.8, common in commune notices.
    "BHYT": "bảo hiểm y tế",
    "BHXH": "bảo hiểm xã hội",
    "BHTN": "bảo hiểm thất nghiệp",
    "UBMTTQ": "ủy ban mặt trận tổ quốc",
    "PCCC": "phòng cháy chữa cháy",
    "PCTT": "phòng chống thiên tai",
    "TKCN": "tìm kiếm cứu nạn",
    "PCTT-TKCN": "phòng chống thiên tai và tìm kiếm cứu nạn",
    "HTX": "hợp tác xã",
    "ATGT": "an toàn giao thông",
    "ATTP": "an toàn thực phẩm",
    "VSMT": "vệ sinh môi trường",
    "VSATTP": "vệ sinh an toàn thực phẩm",
    "TDP": "tổ dân phố",
    "NTM": "nông thôn mới",
    "GPMB": "giải phóng mặt bằng",
    "KT-XH": "kinh tế xã hội",
    "CAX": "công an xã",
    "QSDĐ": "quyền sử dụng đất",
    "SĐT": "số điện thoại",
    "Đ/c": "đồng chí",
    "đ/c": "đồng chí",
    "CCCD": "căn cước công dân",
    "CMND": "chứng minh nhân dân",
    "THCS": "trung học cơ sở",
    "UBND": "ủy ban nhân dân",
    "HĐND": "hội đồng nhân dân",
    "MTTQ": "mặt trận tổ quốc",
}

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def _expand(text: str, table: Mapping[str, str]) -> str:
    if not table:
        return text
    keys = sorted(table, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w/-])")
    return pattern.sub(lambda m: table[m.group(1)], text)


def normalise(text: str, extra_abbreviations: Mapping[str, str] | None = None) -> str:
    """Text as it should be read aloud: abbreviations expanded, numbers and the like in words."""
    from g2p_hamster.t0 import normalize as hamster_normalize

    table = {**ABBREVIATIONS, **(extra_abbreviations or {})}
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n")]
    out = []
    for line in lines:
        if not line:
            continue
        line = _expand(line, table)
        if line[-1] not in ".!?…:;,":
            line += "."
        out.append(str(hamster_normalize(line)["read_string"]).strip())
    return " ".join(s for s in out if s)


def sentences(text: str, max_chars: int = 300) -> list[str]:
    """Split normalised text at sentence ends (then clause ends, then spaces) into pieces of at most ``max_chars``."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        pieces.extend(_fit(sentence.strip(), max_chars))
    return [p for p in pieces if p and any(c.isalnum() for c in p)]


def _fit(sentence: str, max_chars: int, by_clause: bool = True) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    parts = _CLAUSE_END.split(sentence) if by_clause else sentence.split(" ")
    if len(parts) == 1:
        if by_clause:
            return _fit(sentence, max_chars, by_clause=False)
        return [sentence[i:i + max_chars] for i in range(0, len(sentence), max_chars)]  # one endless word
    out: list[str] = []
    current = ""
    for part in parts:
        if len(part) > max_chars:
            if current:
                out.append(current)
                current = ""
            out.extend(_fit(part, max_chars, by_clause=False))
        elif current and len(current) + 1 + len(part) > max_chars:
            out.append(current)
            current = part
        else:
            current = f"{current} {part}".strip()
    if current:
        out.append(current)
    return out
