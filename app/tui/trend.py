"""A native trend chart: each round's metric as a ratio to baseline, the 1.0 line, accepted and rejected marked.
With one to three measured rounds of one run it draws one bar a round instead, its ratio written beside it. The top
and bottom labels are the highest and lowest points themselves, so a label always matches the point beside it."""

from dataclasses import dataclass
from itertools import groupby

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

MARKS = {"accepted": ("●", "bold green"), "rejected": ("×", "red"), "reverted": ("○", "yellow")}
OTHER = ("·", "dim")
COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "red"]
FEW = 3


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[int, float, str], ...]  # (round, ratio, status)


class TrendChart(Widget):
    series: reactive[tuple[Series, ...]] = reactive((), layout=False)

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        points = [p for s in self.series for p in s.points]
        if not points or width < 12 or height < 2:
            return Text("no measured rounds yet: the trend of the ratio to baseline appears here", style="dim")
        if len(self.series) == 1 and len(points) <= FEW:
            return self._bars(width, points)
        return self._plot(width, max(height - 1, 2), points)

    def _bars(self, width: int, points: list) -> Text:
        """One line a round: its mark, verdict, ratio to baseline and a bar to scale."""
        top = max(1.0, *(p[1] for p in points))
        bar_w = min(max(width - 34, 4), 60)
        text = Text("ratio to baseline by round (1.00× = the seed)", style="dim")
        for n, ratio, status in points:
            mark, style = MARKS.get(status, OTHER)
            text.append(f"\nround {n:<3} ", style="dim")
            text.append(f"{mark} {status:<9}", style=style)
            text.append(f"{ratio:6.2f}× ", style="bold")
            text.append("█" * max(round(ratio / top * bar_w), 1), style=style)
        return text

    def _plot(self, width: int, height: int, points: list) -> Text:
        low = min(1.0, *(p[1] for p in points))
        high = max(1.0, *(p[1] for p in points))
        if high - low < 1e-9:
            low, high = low * 0.99, high * 1.01
        last = max(p[0] for p in points)
        plot_w = width - 7
        grid: list[list[tuple[str, str]]] = [[(" ", "")] * plot_w for _ in range(height)]

        def row(value: float) -> int:
            return round((high - value) / (high - low) * (height - 1))

        for x in range(plot_w):
            grid[row(1.0)][x] = ("┄", "dim")
        for i, s in enumerate(self.series):
            for n, ratio, status in s.points:
                x = round((n - 1) / max(last - 1, 1) * (plot_w - 1))
                mark, style = MARKS.get(status, OTHER)
                if len(self.series) > 1:
                    style = f"bold {COLOURS[i % len(COLOURS)]}" if status == "accepted" else COLOURS[i % len(COLOURS)]
                grid[row(ratio)][x] = (mark, style)
        return self._text(grid, low, high, last, plot_w)

    def _text(self, grid, low: float, high: float, last: int, plot_w: int) -> Text:
        text = Text()
        labels = {round((high - 1.0) / (high - low) * (len(grid) - 1)): 1.0, 0: high, len(grid) - 1: low}
        for y, cells in enumerate(grid):
            text.append(f"{labels[y]:5.2f}×" if y in labels else "      ", style="dim")
            text.append("│", style="dim")
            for style, run in groupby(cells, key=lambda c: c[1]):
                text.append("".join(mark for mark, _ in run), style=style)
            text.append("\n")
        end = f"round {last}"
        axis = "round 1" + " " * max(plot_w - 7 - len(end), 1) + end
        text.append("       " + axis[:plot_w], style="dim")
        return text
