"""The trend as inline SVG: each measured round's metric as a gain over the baseline (higher is better whatever the
metric's direction) on a log scale, the best so far as a step line, the baseline at 1, rounds that were never
measured marked on the axis, intervals as whiskers (cut at the frame when far wider than the points), the
end-of-run confirmation at the right."""

import math
from dataclasses import dataclass
from typing import TypeGuard

from app.report.escape import text
from app.report.story import Story, ratio

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 44


@dataclass
class Point:
    n: int
    value: float
    status: str
    label: str
    low: float | None = None
    high: float | None = None


def points(story: Story) -> list[Point]:
    out = []
    for r in story.rounds:
        value = ratio(story.run, r)
        if not usable(value):
            continue
        level = value / r.gain if usable(r.gain) else None
        low = level * r.low if level and usable(r.low) else None
        high = level * r.high if level and usable(r.high) else None
        label = f"round {r.n}: {r.task} · {r.status} · {value:.3f}× the baseline"
        if r.gain and r.low and r.high:
            label += f" · {r.gain:.3f}× its incumbent, interval {r.low:.3f}–{r.high:.3f}×"
        out.append(Point(r.n, value, r.status, label, low, high))
    return out


def usable(value: float | None) -> TypeGuard[float]:
    """A value a log scale can place (a metric of 0 makes an infinite gain)."""
    return value is not None and 0 < value < math.inf


def ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values between low and high: evenly spaced ones over a narrow range, 1-2-5 steps over a wide one."""
    if high / low > 10:
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        found = [round(m * 10.0**k, 10) for k in decades for m in (1, 2, 5) if low <= m * 10.0**k <= high]
        return found if len(found) <= 2 * most else [v for v in found if str(v).strip("0.").startswith("1")]
    raw = (high - low) / most
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 10) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def tick_label(value: float, marks: list[float]) -> str:
    steps = {round(b - a, 9) for a, b in zip(marks, marks[1:], strict=False)}
    if len(steps) > 1:
        return f"{value:g}×"
    places = next((d for d in range(0, 5) if all(abs(round(v, d) - v) < 1e-9 for v in marks)), 4)
    return f"{value:.{max(places, 1)}f}×"


def domain(story: Story, found: list[Point]) -> tuple[float, float]:
    """The values the y axis spans: the points, 1 and the confirmation; whiskers widen it by at most 1.5 times."""
    run = story.run
    core = [1.0] + [p.value for p in found]
    core += [v for v in (run.headline, run.headline_low, run.headline_high) if usable(v)]
    low, high = min(core), max(core)
    low = max(min([low] + [p.low for p in found if p.low]), low / 1.5)
    high = min(max([high] + [p.high for p in found if p.high]), high * 1.5)
    span = max(math.log(high / low), math.log(1.1))
    return low * math.exp(-span * 0.08), high * math.exp(span * 0.08)


def trend(story: Story) -> str:
    run, found = story.run, points(story)
    last = max([r.n for r in story.rounds] + [1])
    confirmed = usable(run.headline)
    right_end = last + (0.8 if confirmed else 0.3)
    low, high = domain(story, found)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(n: float) -> float:
        return LEFT + (n + 0.3) / (right_end + 0.3) * plot_w

    def y(v: float) -> float:
        v = min(max(v, low), high)
        return TOP + math.log(high / v) / math.log(high / low) * plot_h

    marks = ticks(low, high)
    parts = [_axes(marks, x, y, last, low)]
    parts.append(_best_line(story, x, y, right_end))
    for p in found:
        parts.append(_point(p, x(p.n), y))
    bottom = TOP + plot_h
    for r in story.rounds:
        if not usable(ratio(run, r)):
            tip = f"round {r.n}: {r.task} · {r.status} · not measured"
            shape = f"M{x(r.n):.1f},{bottom - 2:.1f} l-5,-9 h10 z"
            parts.append(f'<path class="unmeasured" d="{shape}"><title>{text(tip)}</title></path>')
    if confirmed:
        parts.append(_confirmation(story, x(last + 0.55), y))
    if not found:
        parts.append(f'<text class="empty" x="{LEFT + plot_w / 2:.0f}" y="{TOP + 24}">no measured rounds yet</text>')
    title = f"{run.metric} as a gain over the baseline, round by round"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{text(title)}"><title>{text(title)}</title>{"".join(parts)}</svg>'
    )


def _axes(marks: list[float], x, y, last: int, low: float) -> str:
    out = []
    for v in marks:
        cls = "one" if abs(v - 1.0) < 1e-9 else "grid"
        out.append(f'<line class="{cls}" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        out.append(f'<text class="ylabel" x="{LEFT - 6}" y="{y(v) + 4:.1f}">{tick_label(v, marks)}</text>')
    if not any(abs(v - 1.0) < 1e-9 for v in marks):
        out.append(f'<line class="one" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(1.0):.1f}" y2="{y(1.0):.1f}"/>')
    bottom = y(low)
    step = max(1, math.ceil((last + 1) / 12))
    for n in range(0, last + 1, step):
        label = "seed" if n == 0 else str(n)
        out.append(f'<text class="xlabel" x="{x(n):.1f}" y="{bottom + 16:.1f}">{label}</text>')
    out.append(f'<text class="axis" x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.0f}" y="{HEIGHT - 6}">round</text>')
    out.append(f'<line class="frame" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom:.1f}"/>')
    out.append(f'<line class="frame" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom:.1f}" y2="{bottom:.1f}"/>')
    return "".join(out)


def _best_line(story: Story, x, y, right_end: float) -> str:
    """The best stack's gain over the baseline after each round: it moves only when a round becomes the best."""
    best, path = 1.0, [f"M{x(0):.1f},{y(1.0):.1f}"]
    holder = story.rounds[0].start_commit if story.rounds else None
    for r in story.rounds:
        value = ratio(story.run, r)
        if r.status == "accepted" and usable(value) and (r.start_commit == holder or value > best):
            path.append(f"H{x(r.n):.1f}V{y(value):.1f}")
            best, holder = value, r.commit_sha
    path.append(f"H{x(right_end):.1f}")
    seed = (
        f'<circle class="seed" cx="{x(0):.1f}" cy="{y(1.0):.1f}" r="4"><title>seed: the baseline, 1×</title></circle>'
    )
    return f'<path class="best" d="{"".join(path)}"><title>the best stack so far</title></path>{seed}'


def _point(p: Point, cx: float, y) -> str:
    tip = f"<title>{text(p.label)}</title>"
    whisker = ""
    if p.low is not None and p.high is not None:
        whisker = f'<line class="whisker" x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(p.low):.1f}" y2="{y(p.high):.1f}"/>'
    cy = y(p.value)
    if p.status == "accepted":
        return f'{whisker}<circle class="accepted" cx="{cx:.1f}" cy="{cy:.1f}" r="5">{tip}</circle>'
    if p.status == "rejected":
        d = f"M{cx - 4:.1f},{cy - 4:.1f}l8,8m0,-8l-8,8"
        return f'{whisker}<path class="rejected" d="{d}">{tip}</path>'
    return f'{whisker}<circle class="other" cx="{cx:.1f}" cy="{cy:.1f}" r="4">{tip}</circle>'


def _confirmation(story: Story, cx: float, y) -> str:
    run = story.run
    out = []
    if usable(run.headline_low) and usable(run.headline_high):
        y1, y2 = y(run.headline_low), y(run.headline_high)
        out.append(f'<line class="whisker confirmed" x1="{cx:.1f}" x2="{cx:.1f}" y1="{y1:.1f}" y2="{y2:.1f}"/>')
    cy = y(run.headline)
    tip = f"confirmed: the best stack {run.headline:.3f}× the seed, measured fresh"
    out.append(f'<path class="confirmed" d="M{cx:.1f},{cy - 7:.1f}l7,7l-7,7l-7,-7z"><title>{text(tip)}</title></path>')
    below = y(run.headline_low if usable(run.headline_low) else run.headline)
    out.append(f'<text class="clabel" x="{cx:.1f}" y="{below + 20:.1f}">confirmed</text>')
    return "".join(out)
