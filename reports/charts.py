"""Inline SVG charts for report.html. Layout only: every plotted number comes from results.json.

Each function returns an SVG string (text escaped here) or None when there is nothing to plot.
"""

from __future__ import annotations

import math

from markupsafe import escape

from reports import _format as fmt

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac"]
INK, MUTED, GRID, FONT = "#1f2937", "#6b7280", "#e5e7eb", "12"


def arm_colors(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def _domain(values: list[float], zero: bool = True, pad: float = 0.06) -> tuple[float, float]:
    """The plotted range: the values (and zero, for bars) plus a margin."""
    low, high = min(values), max(values)
    if zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if high == low:
        low, high = low - 0.5, high + 0.5
    margin = (high - low) * pad
    return (low if zero and low == 0 else low - margin), (high if zero and high == 0 else high + margin)


def _time_ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = max((high - low) / count, 1e-9)
    steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400]
    step = next((s for s in steps if s >= raw), steps[-1] * math.ceil(raw / steps[-1]))
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) // step) + 1)]


def _time_label(t: float) -> str:
    if t == 0:
        return "0"
    if t % 3600 == 0:
        return f"{int(t // 3600)} h"
    if t % 60 == 0:
        return f"{int(t // 60)} min"
    return f"{t:g} s"


def _tick_label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e4 else fmt.count(int(v))


def _text(x, y, s, anchor="start", size=FONT, fill=INK, weight="normal", extra="") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
            f'font-weight="{weight}"{extra}>{escape(s)}</text>')


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(label)}" '
            f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif">'
            f'<title>{escape(label)}</title>{"".join(body)}</svg>')


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def bar_chart(title: str, rows: list[dict], colors: dict[str, str], caption: str, zero_line: bool = False,
              worse_side: str | None = None) -> str | None:
    """Horizontal bars with CI whiskers, values in a column on the right.
    rows: name, value, low, high (may be None), best (bool)."""
    rows = [r for r in rows if r["value"] is not None]
    if not rows:
        return None
    values = [v for r in rows for v in (r["value"], r["low"], r["high"]) if v is not None]
    lo, hi = _domain(values)
    if not zero_line and min(values) >= 0 and max(values) <= 1 and max(values) > 0.5:
        lo, hi = 0.0, 1.0
    left, top, row_h, width = 118, 34, 30, 520
    plot_w, bottom = width - left - 86, top + row_h * len(rows)
    height = bottom + 36
    x = lambda v: left + (v - lo) / (hi - lo) * plot_w  # noqa: E731
    body = [_text(left, 18, title, weight="600", size="13")]
    if worse_side:
        x0, x1 = (x(lo), x(0)) if worse_side == "negative" else (x(0), x(hi))
        body.append(f'<rect x="{x0:.1f}" y="{top - 6}" width="{max(x1 - x0, 0):.1f}" '
                    f'height="{row_h * len(rows) + 6}" fill="#fdecec"/>')
    for t in _ticks(lo, hi):
        body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 6}" y2="{bottom}" stroke="{GRID}"/>')
        body.append(_text(x(t), bottom + 14, _tick_label(t), "middle", "10", MUTED))
    base = x(max(lo, min(0.0, hi)))
    for i, r in enumerate(rows):
        cy = top + i * row_h + row_h / 2
        color = colors.get(r["name"], PALETTE[0])
        weight = "600" if r.get("best") else "normal"
        body.append(_text(left - 8, cy + 4, _short(r["name"]), "end", weight=weight))
        x0, x1 = sorted((base, x(r["value"])))
        body.append(f'<rect class="bar" x="{x0:.1f}" y="{cy - 9:.1f}" width="{max(x1 - x0, 1.5):.1f}" height="18" '
                    f'rx="3" fill="{color}" fill-opacity="0.85"><title>{escape(r["name"])}: '
                    f'{escape(fmt.num(r["value"]))} {escape(fmt.interval(r["low"], r["high"]))}</title></rect>')
        if r["low"] is not None and r["high"] is not None:
            a, b = x(r["low"]), x(r["high"])
            body.append(f'<path d="M{a:.1f},{cy:.1f}H{b:.1f}M{a:.1f},{cy - 6:.1f}V{cy + 6:.1f}'
                        f'M{b:.1f},{cy - 6:.1f}V{cy + 6:.1f}" stroke="{INK}" stroke-width="1.4" fill="none"/>')
        label = fmt.num(r["value"], signed=zero_line) + (" ★" if r.get("best") else "")
        body.append(_text(left + plot_w + 10, cy + 4, label, size="11", weight=weight))
    if zero_line:
        body.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 6}" y2="{bottom}" stroke="{INK}"/>')
    body.append(_text(left, height - 4, caption, size="10", fill=MUTED))
    return _svg(width, height, title, body)


def loss_chart(curves: dict[str, list[tuple[int, float]]], colors: dict[str, str]) -> str | None:
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    steps = [s for c in curves.values() for s, _ in c]
    losses = [v for c in curves.values() for _, v in c]
    (slo, shi), (llo, lhi) = _domain(steps, pad=0.02), _domain(losses)
    left, top, width, height = 56, 40, 960, 340
    pw, ph = width - left - 150, height - top - 48
    x = lambda s: left + (s - slo) / (shi - slo) * pw  # noqa: E731
    y = lambda v: top + ph - (v - llo) / (lhi - llo) * ph  # noqa: E731
    body = [_text(left, 20, "Training loss", weight="600", size="14")]
    for t in _ticks(llo, lhi):
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 8, y(t) + 4, _tick_label(t), "end", "11", MUTED))
    for t in _ticks(slo, shi, 8):
        body.append(_text(x(t), top + ph + 18, _tick_label(t), "middle", "11", MUTED))
    body.append(f'<path d="M{left},{top}V{top + ph}H{left + pw}" stroke="{MUTED}" fill="none"/>')
    body.append(_text(left + pw / 2, height - 6, "optimizer step", "middle", "12", MUTED))
    for i, (name, curve) in enumerate(curves.items()):
        color = colors.get(name, PALETTE[i % len(PALETTE)])
        points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in curve)
        body.append(f'<polyline class="line" points="{points}" fill="none" stroke="{color}" stroke-width="2" '
                    f'stroke-linejoin="round"><title>{escape(name)}</title></polyline>')
        if len(curve) == 1:
            body.append(f'<circle cx="{x(curve[0][0]):.1f}" cy="{y(curve[0][1]):.1f}" r="3" fill="{color}"/>')
        ly = top + 10 + i * 22
        body.append(f'<line x1="{left + pw + 20}" x2="{left + pw + 42}" y1="{ly}" y2="{ly}" stroke="{color}" '
                    f'stroke-width="3"/>')
        body.append(_text(left + pw + 50, ly + 4, _short(name, 14), size="13"))
    return _svg(width, height, "Training loss curves", body)


def scatter_chart(points: list[dict], metric: str, higher: bool, colors: dict[str, str],
                  cost_name: str = "training time (wall clock)") -> str | None:
    """Quality vs training cost. points: name, value, cost (seconds of `cost_name`), front (bool)."""
    if not points:
        return None
    clo, chi = _domain([p["cost"] for p in points], pad=0.04)
    clo = -(chi - clo) * 0.03  # room for the points at zero cost (prompt arms)
    vlo, vhi = _domain([p["value"] for p in points], zero=False, pad=0.12)
    left, top, width, height = 64, 56, 960, 380
    pw, ph = width - left - 160, height - top - 52
    x = lambda c: left + (c - clo) / (chi - clo) * pw  # noqa: E731
    y = lambda v: top + ph - (v - vlo) / (vhi - vlo) * ph  # noqa: E731
    arrow = "↑ higher is better" if higher else "↓ lower is better"
    body = [_text(left, 20, f"{metric} vs {cost_name}", weight="600", size="14"),
            _text(left, 40, f"{metric} {arrow}. Dark ring and ◆: on the Pareto front (no other arm is at least as "
                            f"good on both quality and {cost_name}).", size="12", fill=MUTED)]
    for t in _ticks(vlo, vhi):
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 8, y(t) + 4, _tick_label(t), "end", "11", MUTED))
    for t in _time_ticks(max(clo, 0), chi):
        body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + ph}" stroke="{GRID}"/>')
        body.append(_text(x(t), top + ph + 18, _time_label(t), "middle", "11", MUTED))
    body.append(f'<path d="M{left},{top}V{top + ph}H{left + pw}" stroke="{MUTED}" fill="none"/>')
    body.append(_text(left + pw / 2, height - 8, cost_name, "middle", "12", MUTED))
    front = sorted((p for p in points if p["front"]), key=lambda p: (p["cost"], p["value"] * (-1 if higher else 1)))
    if len(front) > 1:
        d = f"M{x(front[0]['cost']):.1f},{y(front[0]['value']):.1f}" + "".join(
            f"H{x(p['cost']):.1f}V{y(p['value']):.1f}" for p in front[1:])
        body.append(f'<path class="front" d="{d}" stroke="{INK}" stroke-width="1.2" stroke-dasharray="5 4" '
                    f'fill="none"/>')
    placed: list[tuple[float, float]] = []
    for p in sorted(points, key=lambda p: y(p["value"])):
        cx, cy = x(p["cost"]), y(p["value"])
        ly = cy + 5
        while any(abs(ly - py) < 16 and abs(cx - px) < 120 for px, py in placed):
            ly += 16
        placed.append((cx, ly))
        color = colors.get(p["name"], PALETTE[0])
        ring = f' stroke="{INK}" stroke-width="3"' if p["front"] else ' stroke="#fff" stroke-width="1.5"'
        body.append(f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="8" fill="{color}"{ring}>'
                    f'<title>{escape(p["name"])}: {escape(fmt.num(p["value"]))}, '
                    f'{escape(fmt.seconds(p["cost"]))}</title></circle>')
        label = f"{_short(p['name'], 16)} {fmt.num(p['value'])}" + (" ◆" if p["front"] else "")
        body.append(_text(cx + 13, ly, label, size="13", weight="600" if p["front"] else "normal",
                          extra=' stroke="#fff" stroke-width="4" paint-order="stroke" stroke-linejoin="round"'))
    return _svg(width, height, f"{metric} vs {cost_name}, Pareto front marked", body)
