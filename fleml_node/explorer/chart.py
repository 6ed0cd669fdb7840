"""The round page's chart, drawn on the server as inline SVG (no script, no CDN).

Two panels share one column per member (in member-index order): the aggregation coefficient
on top, the defense's primary score (FLEML's anomaly score, Krum's score, FLTrust's trust)
below, each on its own scale with zero marked. Accepted members' bars are blue, flagged ones
red; rejected members (no coefficient, no score) get an empty column marked "rejected". Every
text is escaped: labels are member-controlled.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

WIDTH_PER_MEMBER = 56
PANEL_HEIGHT = 120
TOP = 24
LEFT = 64
COLORS = {"accepted": "#2c6fbb", "flagged": "#c0392b", "rejected": "#999999"}


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _panel(y0: float, values: list[float | None], statuses: list[str], title: str,
           width: float) -> list[str]:
    """One bar panel from y0 to y0 + PANEL_HEIGHT; bars on a scale spanning 0 and every value."""
    shown = [v for v in values if v is not None]
    low, high = min([0.0, *shown]), max([0.0, *shown])
    if high == low:
        high = low + 1.0
    scale = PANEL_HEIGHT / (high - low)
    zero = y0 + (high - 0.0) * scale
    out = [f'<text x="4" y="{y0 - 6:.1f}" class="t">{escape(title)}</text>',
           f'<text x="{LEFT - 4}" y="{y0 + 4:.1f}" class="a" text-anchor="end">'
           f'{_fmt(high)}</text>',
           f'<text x="{LEFT - 4}" y="{y0 + PANEL_HEIGHT:.1f}" class="a" text-anchor="end">'
           f'{_fmt(low)}</text>',
           f'<line x1="{LEFT}" x2="{width - 4}" y1="{zero:.1f}" y2="{zero:.1f}" class="z"/>']
    for i, (value, status) in enumerate(zip(values, statuses, strict=True)):
        x = LEFT + i * WIDTH_PER_MEMBER + 8
        if value is None:
            continue
        top, bottom = sorted((zero, y0 + (high - value) * scale))
        out.append(f'<rect x="{x}" y="{top:.1f}" width="{WIDTH_PER_MEMBER - 16}" '
                   f'height="{max(bottom - top, 0.5):.1f}" fill="{COLORS.get(status, "#555")}">'
                   f'<title>{escape(_fmt(value))}</title></rect>')
    return out


def round_chart(submissions: list[dict[str, Any]], score_name: str | None) -> Markup:
    """The chart of a round's submissions (each with ``status``, ``coefficient``, ``scores``,
    ``label``, ``index``), as an ``<svg>`` element; empty when nothing was reported."""
    rows = sorted((s for s in submissions if "status" in s),
                  key=lambda s: (s.get("index") is None, s.get("index") or 0))
    if not rows:
        return Markup("")
    width = LEFT + WIDTH_PER_MEMBER * len(rows) + 8
    height = TOP + 2 * PANEL_HEIGHT + 40 + 44
    statuses = [s["status"] for s in rows]
    coefficients = [s.get("coefficient") for s in rows]
    scores = [(s.get("scores") or {}).get(score_name) if score_name else None for s in rows]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" class="chart" '
             f'aria-label="coefficient and {escape(score_name or "score")} per member">',
             '<style>.t{font:bold 12px sans-serif}.a{font:10px sans-serif;fill:#555}'
             '.l{font:10px sans-serif}.z{stroke:#333;stroke-width:1}</style>']
    parts += _panel(TOP, coefficients, statuses, "coefficient", width)
    if score_name:
        parts += _panel(TOP + PANEL_HEIGHT + 40, scores, statuses,
                        f"score: {score_name}", width)
    base = TOP + 2 * PANEL_HEIGHT + 40 + 14
    for i, row in enumerate(rows):
        x = LEFT + i * WIDTH_PER_MEMBER + WIDTH_PER_MEMBER / 2
        name = str(row.get("label") or row["member"][:8])
        short = name if len(name) <= 9 else name[:8] + "…"
        parts.append(f'<text x="{x:.1f}" y="{base}" class="l" text-anchor="middle">'
                     f'#{escape(row.get("index"))}<title>{escape(name)}</title></text>')
        parts.append(f'<text x="{x:.1f}" y="{base + 12}" class="l" text-anchor="middle">'
                     f'{escape(short)}</text>')
        parts.append(f'<text x="{x:.1f}" y="{base + 24}" class="l" text-anchor="middle" '
                     f'fill="{COLORS.get(row["status"], "#555")}">{escape(row["status"])}'
                     f'</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def history_chart(history: list[dict[str, Any]]) -> Markup:
    """A member's coefficient per round (oldest left): blue accepted, red flagged, an empty
    column for a round it was rejected in or did not submit to."""
    rows = sorted(history, key=lambda h: h["round"])
    if not any(h.get("coefficient") is not None for h in rows):
        return Markup("")
    width = LEFT + WIDTH_PER_MEMBER * len(rows) + 8
    height = TOP + PANEL_HEIGHT + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" class="chart" '
             f'aria-label="coefficient per round">',
             '<style>.t{font:bold 12px sans-serif}.a{font:10px sans-serif;fill:#555}'
             '.l{font:10px sans-serif}.z{stroke:#333;stroke-width:1}</style>']
    parts += _panel(TOP, [h.get("coefficient") for h in rows],
                    [h.get("status") or "none" for h in rows], "coefficient per round", width)
    for i, h in enumerate(rows):
        x = LEFT + i * WIDTH_PER_MEMBER + WIDTH_PER_MEMBER / 2
        parts.append(f'<text x="{x:.1f}" y="{TOP + PANEL_HEIGHT + 16}" class="l" '
                     f'text-anchor="middle">r{escape(h["round"])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
