"""The picture of a tune: throughput against p99 for every run of every trial, winners marked.

Written as SVG by hand rather than with matplotlib, which only the [train] extra installs: the
serving image and a plain `pip install convserve` get the plot too. p99 is on a log axis (one
search spans sub-millisecond runs and overloaded ones), throughput on a linear one from zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

from service.tune.search import Run, Trial

WIDTH, HEIGHT = 780, 520
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 48, 130
MEETS, OVER, RATE = "#1f77b4", "#c7c7c7", "#ff7f0e"
BEST_THROUGHPUT, BEST_LATENCY = "#2ca02c", "#d62728"


def render(
    trials: Sequence[Trial],
    *,
    title: str,
    p99_ms: float,
    best_throughput: tuple[Trial, Run] | None,
    best_latency: tuple[Trial, Run] | None,
    again: Mapping[str, Run | None] | None = None,
) -> str:
    """The SVG document; `again` holds each winner's second measurement (by goal), drawn as a
    diamond joined to the first."""
    again = again or {}
    points = [(t, r) for t in trials for r in t.runs if r.requests and r.p99_ms > 0]
    seconds = {g: r for g, r in again.items() if r is not None and r.requests and r.p99_ms > 0}
    xs = [r.p99_ms for _, r in points] + [r.p99_ms for r in seconds.values()] + [p99_ms]
    x_lo = 10 ** math.floor(math.log10(min(xs)))
    x_hi = 10 ** math.ceil(math.log10(max(xs) * 1.05))
    y_hi = _nice_top(
        max([r.throughput_rps for _, r in points] + [r.throughput_rps for r in seconds.values()])
        if points or seconds
        else 1.0
    )
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(v: float) -> float:
        return LEFT + plot_w * (math.log10(v) - math.log10(x_lo)) / math.log10(x_hi / x_lo)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / y_hi)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for tick in _log_ticks(x_lo, x_hi):
        out.append(_line(x(tick), TOP, x(tick), TOP + plot_h, "#eeeeee"))
        out.append(_text(x(tick), TOP + plot_h + 16, f"{tick:g}", "middle"))
    step = y_hi / 5
    for i in range(6):
        out.append(_line(LEFT, y(i * step), LEFT + plot_w, y(i * step), "#eeeeee"))
        out.append(_text(LEFT - 6, y(i * step) + 4, f"{i * step:g}", "end"))
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>'
    )
    out.append(_text(LEFT + plot_w / 2, TOP + plot_h + 34, "p99 latency (ms, log scale)", "middle"))
    out.append(
        f'<text transform="translate(18 {TOP + plot_h / 2}) rotate(-90)" '
        'text-anchor="middle">throughput (requests/s)</text>'
    )
    bx = x(p99_ms)
    out.append(
        f'<line x1="{bx:.1f}" y1="{TOP}" x2="{bx:.1f}" y2="{TOP + plot_h}" '
        'stroke="#d62728" stroke-dasharray="5,4"/>'
    )
    out.append(_text(bx + 4, TOP + 14, f"p99 budget {p99_ms:g} ms", "start", "#d62728"))
    for _, r in points:
        px, py = x(r.p99_ms), y(r.throughput_rps)
        if r.rate:
            out.append(_triangle(px, py, RATE))
        else:
            colour = MEETS if r.ok and r.p99_ms <= p99_ms else OVER
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"/>')
    legend = [
        ("circle", MEETS, "closed-loop run, p99 within budget"),
        ("circle", OVER, "closed-loop run over budget (or errors)"),
        ("triangle", RATE, "run at the target rate"),
    ]
    for goal, name, colour, best in (
        ("throughput", "best throughput", BEST_THROUGHPUT, best_throughput),
        ("latency", "best p99 at rate", BEST_LATENCY, best_latency),
    ):
        if best is None:
            continue
        trial, run = best
        px, py = x(run.p99_ms), y(run.throughput_rps)
        out.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="9" fill="none" stroke="{colour}" '
            'stroke-width="2.5"/>'
        )
        text = (
            f"{name}: trial {trial.index} ({trial.knobs.label()}), "
            f"{run.throughput_rps:.0f} req/s, p99 {run.p99_ms:.2f} ms"
        )
        second = seconds.get(goal)
        if second is not None:
            qx, qy = x(second.p99_ms), y(second.throughput_rps)
            out.append(
                f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{qx:.1f}" y2="{qy:.1f}" '
                f'stroke="{colour}" stroke-dasharray="3,3"/>'
            )
            out.append(_diamond(qx, qy, colour))
            text += f"; again: {second.throughput_rps:.0f} req/s, p99 {second.p99_ms:.2f} ms"
        legend.append(("ring", colour, text))
    for i, (shape, colour, text) in enumerate(legend):
        ly = HEIGHT - BOTTOM + 54 + 15 * i
        if shape == "ring":
            out.append(
                f'<circle cx="{LEFT + 5}" cy="{ly - 4}" r="5" fill="none" stroke="{colour}" '
                'stroke-width="2"/>'
            )
        elif shape == "triangle":
            out.append(_triangle(LEFT + 5, ly - 4, colour))
        else:
            out.append(f'<circle cx="{LEFT + 5}" cy="{ly - 4}" r="4" fill="{colour}"/>')
        out.append(_text(LEFT + 16, ly, text, "start"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _diamond(x: float, y: float, colour: str) -> str:
    return (
        f'<path d="M{x:.1f},{y - 7:.1f} L{x + 7:.1f},{y:.1f} L{x:.1f},{y + 7:.1f} '
        f'L{x - 7:.1f},{y:.1f} Z" fill="none" stroke="{colour}" stroke-width="2"/>'
    )


def _triangle(x: float, y: float, colour: str) -> str:
    return (
        f'<path d="M{x:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 4:.1f} L{x - 5:.1f},{y + 4:.1f} Z" '
        f'fill="{colour}" fill-opacity="0.8"/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, colour: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"/>'


def _text(x: float, y: float, text: str, anchor: str, colour: str = "#222") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{colour}">'
        f"{escape(text)}</text>"
    )


def _log_ticks(lo: float, hi: float) -> list[float]:
    decades = range(round(math.log10(lo)), round(math.log10(hi)) + 1)
    ticks = [m * 10.0**d for d in decades for m in (1, 2, 5)]
    return [t for t in ticks if lo <= t <= hi]


def _nice_top(value: float) -> float:
    """The smallest 1/2/5 × 10^k multiple of 5 steps at or above `value`."""
    value = max(value, 1e-9)
    magnitude = 10.0 ** math.floor(math.log10(value / 5))
    for m in (1, 2, 2.5, 5, 10):
        if 5 * m * magnitude >= value:
            return 5 * m * magnitude
    return 50 * magnitude
