"""Vietnamese text normalisation before speech, on our own sentences."""

from __future__ import annotations

import pytest

from audio import textnorm


@pytest.mark.parametrize(("text", "expected"), [
    ("Ngày 22/11/2026 họp.", "ngày hai mươi hai tháng mười một năm hai nghìn không trăm hai mươi sáu"),
    ("Lúc 17h30 tập trung.", "mười bảy giờ ba mươi"),
    ("Lúc 7:45 sáng.", "bảy giờ bốn mươi lăm"),
    ("Hỗ trợ 1.500.000đ mỗi hộ.", "một triệu năm trăm nghìn đồng"),
    ("Tăng 12,5% so với năm trước.", "mười hai phẩy năm phần trăm"),
    ("Gọi 0912345678 khi cần.", "không chín một hai ba bốn năm sáu bảy tám"),
    ("Đây là lần thứ 2.", "lần thứ hai"),
    ("Thôn 3 có 125 hộ.", "thôn ba có một trăm hai mươi lăm hộ"),
    ("UBND xã và HĐND, MTTQ họp.", "ủy ban nhân dân xã và hội đồng nhân dân, mặt trận tổ quốc"),
    ("Đoàn về từ TP.HCM.", "thành phố Hồ Chí Minh"),
    ("Học sinh THCS và THPT.", "trung học cơ sở và trung học phổ thông"),
    ("Mang thẻ BHYT và CCCD.", "bảo hiểm y tế và căn cước công dân"),
    ("Đ/c Bí thư phát biểu.", "đồng chí Bí thư"),
    ("Diễn tập PCCC tại HTX.", "phòng cháy chữa cháy tại hợp tác xã"),
])
def test_reads_numbers_dates_times_money_phones_and_abbreviations(text, expected):
    assert expected.lower() in textnorm.normalise(text).lower()


def test_operator_abbreviations_win_and_respect_word_boundaries():
    out = textnorm.normalise("Bà con QP và QPX chú ý.", {"QP": "Quảng Phú"})
    assert out.startswith("Bà con Quảng Phú và")
    assert "Quảng PhúX" not in out and "Quảng Phú X" not in out


def test_lines_without_final_punctuation_become_sentences():
    out = textnorm.normalise("Thông báo\nLịch tiêm phòng")
    assert textnorm.sentences(out) == ["Thông báo.", "Lịch tiêm phòng."]


def test_long_text_is_split_at_sentence_then_clause_boundaries():
    sentence = "Bà con " + ", ".join(f"thôn {n}" for n in ("một", "hai", "ba", "bốn", "năm", "sáu")) + " chú ý."
    pieces = textnorm.sentences((sentence + " ") * 5, max_chars=40)
    assert all(len(p) <= 40 for p in pieces)
    assert " ".join(pieces).split() == ((sentence + " ") * 5).split()


def test_an_endless_word_is_cut():
    assert textnorm.sentences("a" * 95, max_chars=40) == ["a" * 40, "a" * 40, "a" * 15]
