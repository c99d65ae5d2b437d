"""Pictures for the pages as inline SVG: heartbeat history lines, the working share, receivers by coordinates.

Plain data in (from :mod:`controller.services.health`), markup out; every text drawn is escaped.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

from controller.services.health import BUCKET_MS, STATUS_COLOUR, STATUS_VI


def line_chart(series: list[tuple[str, str, list[tuple[int, float | None]]]], since_ms: int, until_ms: int,
               *, label: str, unit: str = "", band: list[tuple[int, float | None, float | None]] | None = None,
               fmt_x=None, y_min: float | None = None, y_max: float | None = None,
               width: int = 720, height: int = 200) -> Markup:
    """An inline SVG line chart: ``series`` is ``[(name, colour, [(ms, value)])]``; ``band`` a min-max area.

    Gaps (None, or no point for more than two buckets) break the line, so an offline spell shows as one.
    """
    values = [v for _, _, pts in series for _, v in pts if v is not None]
    if band:
        values += [v for _, lo, hi in band for v in (lo, hi) if v is not None]
    left, right, top, bottom = 48, 8, 10, 24
    w, h = width - left - right, height - top - bottom
    title = escape(label)
    if not values:
        return Markup(f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{title}">'
                      f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#666">'
                      "Chưa có dữ liệu</text></svg>")
    lo = min(values) if y_min is None else min(y_min, min(values))
    hi = max(values) if y_max is None else max(y_max, max(values))
    if hi - lo < 1e-9:
        hi, lo = hi + 1, lo - 1
    span = max(1, until_ms - since_ms)

    def x(ms: int) -> float:
        return left + (ms - since_ms) / span * w

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * h

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{title}" '
             'preserveAspectRatio="none">', f"<title>{title}</title>"]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e3e6ea"/>'
                     f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#555">'
                     f"{_tick(v)}{escape(unit)}</text>")
    if fmt_x is not None:
        for i in range(5):
            ms = since_ms + span * i // 4
            anchor = "start" if i == 0 else "end" if i == 4 else "middle"
            parts.append(f'<text x="{x(ms):.1f}" y="{height - 6}" text-anchor="{anchor}" font-size="11" '
                         f'fill="#555">{escape(fmt_x(ms))}</text>')
    gap = 2 * BUCKET_MS + 1
    if band:
        for seg in _segments([(ms, (a, b)) for ms, a, b in band if a is not None and b is not None], gap):
            outline = [f"{x(ms):.1f},{y(b):.1f}" for ms, (_, b) in seg] + \
                      [f"{x(ms):.1f},{y(a):.1f}" for ms, (a, _) in reversed(seg)]
            parts.append(f'<polygon points="{" ".join(outline)}" fill="#3a86ff" fill-opacity="0.15"/>')
    for name, colour, pts in series:
        for seg in _segments([(ms, v) for ms, v in pts if v is not None], gap):
            if len(seg) == 1:
                ms, v = seg[0]
                parts.append(f'<circle cx="{x(ms):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>')
            else:
                line = " ".join(f"{x(ms):.1f},{y(v):.1f}" for ms, v in seg)
                parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.6">'
                             f"<title>{escape(name)}</title></polyline>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _segments(points: list[tuple[int, Any]], gap: int) -> list[list[tuple[int, Any]]]:
    out: list[list[tuple[int, Any]]] = []
    for ms, v in sorted(points, key=lambda p: p[0]):
        if out and ms - out[-1][-1][0] <= gap:
            out[-1].append((ms, v))
        else:
            out.append([(ms, v)])
    return out


def _tick(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.1f}"


def coordinate_plot(points: list[dict[str, Any]], width: int = 720, height: int = 420,
                    link=None, max_points: int = 600) -> Markup:
    """A plain SVG plot of receivers by latitude/longitude, coloured by status (the map without tiles).

    More than ``max_points`` receivers are binned into a grid; each cell takes its worst status and
    a size by count, so the page stays small for a province.
    """
    if not points:
        return Markup(f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" aria-label="Bản đồ cụm loa">'
                      f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#666">'
                      "Chưa có cụm loa nào có toạ độ</text></svg>")
    lats = [p["lat"] for p in points]
    lons = [p["lon"] for p in points]
    lat0, lat1, lon0, lon1 = min(lats), max(lats), min(lons), max(lons)
    pad = 14
    sx = (width - 2 * pad) / max(lon1 - lon0, 1e-6)
    sy = (height - 2 * pad) / max(lat1 - lat0, 1e-6)
    scale = min(sx, sy)

    def xy(p):
        return pad + (p["lon"] - lon0) * scale, height - pad - (p["lat"] - lat0) * scale

    parts = [f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" aria-label="Bản đồ cụm loa">'
             f'<rect width="{width}" height="{height}" fill="#f8fafc"/>']
    if len(points) <= max_points:
        rank = {"ok": 0, "unknown": 1, "offline": 1, "fault": 2}
        for p in sorted(points, key=lambda p: rank[p["status"]]):  # problems drawn last, on top
            cx, cy = xy(p)
            tip = f'{escape(p["name"])} · {STATUS_VI[p["status"]]}'
            dot = (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{STATUS_COLOUR[p["status"]]}" '
                   f'stroke="#fff" data-rx="{escape(p["id"])}" data-status="{p["status"]}">'
                   f"<title>{tip}</title></circle>")
            parts.append(f'<a href="{escape(link(p["id"]))}">{dot}</a>' if link else dot)
    else:
        cell = 12
        cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for p in points:
            cx, cy = xy(p)
            cells.setdefault((int(cx // cell), int(cy // cell)), []).append(p)
        worst = {"fault": 2, "offline": 1, "unknown": 1, "ok": 0}
        for (i, j), members in cells.items():
            status = max((m["status"] for m in members), key=lambda s: worst[s])
            bad = sum(1 for m in members if m["status"] != "ok")
            r = min(cell / 2 + 1, 2 + math.sqrt(len(members)))
            parts.append(f'<circle cx="{i * cell + cell / 2}" cy="{j * cell + cell / 2}" r="{r:.1f}" '
                         f'fill="{STATUS_COLOUR[status]}" data-status="{status}"><title>{len(members)} cụm, '
                         f"{bad} có vấn đề</title></circle>")
    parts.append("</svg>")
    return Markup("".join(parts))


def share_chart(points: list[tuple[int, float]], since_ms: int, until_ms: int, fmt_x, label: str) -> Markup:
    """The working share (0-100 %) over time as an SVG line chart."""
    return line_chart([("Tỉ lệ hoạt động", "#2b9348", [(ms, share * 100) for ms, share in points])],
                      since_ms, until_ms, label=label, unit="%", fmt_x=fmt_x, y_min=0, y_max=100)
