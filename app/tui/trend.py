"""A native trend chart: each round's metric as a ratio to baseline, the 1.0 line, accepted and rejected marked."""

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

MARKS = {"accepted": ("●", "bold green"), "rejected": ("×", "red"), "reverted": ("○", "yellow")}
OTHER = ("·", "dim")
COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "red"]


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[int, float, str], ...]  # (round, ratio, status)


class TrendChart(Widget):
    series: reactive[tuple[Series, ...]] = reactive((), layout=False)

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        points = [p for s in self.series for p in s.points]
        if not points or width < 12 or height < 3:
            return Text("no measured rounds yet", style="dim")
        return self._plot(width, height - 1, points)

    def _plot(self, width: int, height: int, points: list) -> Text:
        low = min(1.0, *(p[1] for p in points)) * 0.97
        high = max(1.0, *(p[1] for p in points)) * 1.03
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
        labels = {0: high, len(grid) - 1: low, round((high - 1.0) / (high - low) * (len(grid) - 1)): 1.0}
        for y, cells in enumerate(grid):
            text.append(f"{labels[y]:5.2f}×" if y in labels else "      ", style="dim")
            text.append("│", style="dim")
            for mark, style in cells:
                text.append(mark, style=style)
            text.append("\n")
        axis = f"round 1{'':>{max(plot_w - 14, 1)}}round {last}"
        text.append("       " + axis[:plot_w], style="dim")
        return text
