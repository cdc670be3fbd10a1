"""The picture of `./stack bench`: an SVG (no plotting library) with two panels, latency against
offered rate (log scale, the goal drawn) and CPU per order per component, one stacked bar per rate."""

from __future__ import annotations

import math
from html import escape

W, H = 1160, 480
PAD = 80
PANEL_W = 480
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
          "#31a354"]
SERIES = [("post_final", "p50", "POST→final p50", "#1f77b4", ""),
          ("post_final", "p99", "POST→final p99", "#d62728", ""),
          ("post_202", "p99", "POST→202 p99", "#2ca02c", "4 3"),
          ("saga_own", "p99", "saga 202→final p99", "#9467bd", "4 3")]


def text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", weight: str = "normal",
         fill: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=mag * 10)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step / 2:
        if t >= lo - 1e-9:
            ticks.append(round(t, 6))
        t += step
    return ticks


def latency_panel(runs: list[dict], goal_ms: float, x0: float, y0: float) -> list[str]:
    w, h = PANEL_W, H - 2 * PAD - 40
    out = [text(x0, y0 - 20, "Latency against offered rate", 15, weight="bold")]
    rates = [float(r.get("rate") or 0) for r in runs]
    values = [((r.get("latency_ms") or {}).get(k) or {}).get(q) for r in runs for k, q, *_ in SERIES]
    values = [v for v in values if v] + [goal_ms]
    lo = 10 ** math.floor(math.log10(max(min(values), 0.1)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    xmax = max(rates + [1]) * 1.1
    sx = lambda v: x0 + v / xmax * w  # noqa: E731
    sy = lambda v: y0 + h - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * h  # noqa: E731
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    decade = lo
    while decade <= hi * 1.0001:
        y = sy(decade)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(text(x0 - 6, y + 4, f"{decade:g} ms", 11, "end"))
        decade *= 10
    for t in nice_ticks(0, xmax):
        out.append(text(sx(t), y0 + h + 16, f"{t:g}", 11, "middle"))
    out.append(text(x0 + w / 2, y0 + h + 34, "offered orders/s", 12, "middle"))
    gy = sy(goal_ms)
    out.append(f'<line x1="{x0}" y1="{gy:.1f}" x2="{x0 + w}" y2="{gy:.1f}" stroke="#d62728" '
               f'stroke-width="1" stroke-dasharray="2 4"/>')
    out.append(text(x0 + w - 4, gy - 4, f"goal: p99 POST→final ≤ {goal_ms:g} ms", 11, "end", fill="#d62728"))
    for i, (key, q, label, color, dash) in enumerate(SERIES):
        pts = [(sx(float(r.get("rate") or 0)), sy(v)) for r in runs
               if (v := ((r.get("latency_ms") or {}).get(key) or {}).get(q))]
        if pts:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" '
                       f'stroke-dasharray="{dash}"/>')
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
        ly = y0 + 14 + i * 16
        out.append(f'<line x1="{x0 + 10}" y1="{ly - 4}" x2="{x0 + 30}" y2="{ly - 4}" stroke="{color}" '
                   f'stroke-width="2" stroke-dasharray="{dash}"/>')
        out.append(text(x0 + 36, ly, label, 11))
    return out


def cpu_panel(runs: list[dict], x0: float, y0: float) -> list[str]:
    w, h = PANEL_W, H - 2 * PAD - 40
    out = [text(x0, y0 - 20, "CPU per order, by process (ms)", 15, weight="bold")]
    rows = [(r, (r.get("processes") or {}).get("components") or {}) for r in runs]
    rows = [(r, c) for r, c in rows if c]
    if not rows:
        return out + [text(x0, y0 + 20, "no process measurements", 12)]
    names = sorted({n for _r, c in rows for n in c},
                   key=lambda n: -max((c.get(n) or {}).get("cpu_ms_per_order") or 0 for _r, c in rows))
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    totals = [sum((c.get(n) or {}).get("cpu_ms_per_order") or 0 for n in names) for _r, c in rows]
    xmax = max(totals + [1]) * 1.05
    bar_h = min(28.0, (h - 10) / len(rows) - 6)
    label_w = 70
    scale = (w - label_w - 50) / xmax
    for i, ((run, comps), total) in enumerate(zip(rows, totals)):
        y = y0 + 8 + i * (bar_h + 6)
        out.append(text(x0 + label_w - 6, y + bar_h / 2 + 4, f"{float(run.get('rate') or 0):g}/s", 11, "end"))
        x = x0 + label_w
        for n in names:
            v = (comps.get(n) or {}).get("cpu_ms_per_order") or 0
            if v <= 0:
                continue
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{v * scale:.1f}" height="{bar_h:.1f}" '
                       f'fill="{color[n]}"><title>{escape(n)}: {v:.1f} ms/order</title></rect>')
            x += v * scale
        out.append(text(x + 4, y + bar_h / 2 + 4, f"{total:.0f} ms", 11))
    ly = y0 + 8 + len(rows) * (bar_h + 6) + 14
    col_w = 125
    for i, n in enumerate(names):
        lx = x0 + label_w + (i % 3) * col_w
        yy = ly + (i // 3) * 15
        out.append(f'<rect x="{lx}" y="{yy - 9}" width="10" height="10" fill="{color[n]}"/>')
        out.append(text(lx + 14, yy, n, 11))
    return out


def svg(report: dict) -> str:
    runs = sorted(report.get("runs") or [], key=lambda r: float(r.get("rate") or 0))
    goal = float((report.get("goal") or {}).get("p99_post_final_ms") or 500)
    m = report.get("machine") or {}
    title = (f"./stack bench · {report.get('when', '')} · commit {report.get('commit', '')} · "
             f"{m.get('cores', '?')} cores · release build, whole stack")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'font-family="sans-serif" viewBox="0 0 {W} {H}">',
             f'<rect width="{W}" height="{H}" fill="white"/>', text(PAD, 28, title, 13, fill="#555")]
    parts += latency_panel(runs, goal, PAD, PAD + 20)
    parts += cpu_panel(runs, PAD + PANEL_W + 80, PAD + 20)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
