"""Two or more runs side by side: their trends on one chart and their best stacks' figures and settings."""

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from app.store import StoreError
from app.tui import data
from app.tui.cells import num
from app.tui.literal import line, lit
from app.tui.runs import ratio
from app.tui.screen import AtelierScreen
from app.tui.trend import COLOURS, Series, TrendChart

COLUMNS = ("", "run", "target", "status", "rounds", "baseline", "best", "best ×", "best commit", "best settings")


class CompareScreen(AtelierScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Comparing {len(self.run_ids)} runs: ratio to each run's own baseline", id="compare-head")
        yield TrendChart(id="compare-trend")
        yield DataTable(id="compare", cursor_type="row")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.load()

    @work(thread=True, exclusive=True, group="compare")
    def load(self) -> None:
        try:
            details = [self.atelier.reader.detail(run_id) for run_id in self.run_ids]
        except StoreError as e:
            self.app.call_from_thread(self.query_one("#compare-head", Static).update, lit(str(e), style="red"))
            return
        settings = [data.settings_at(d.row.run, d.row.run.best_commit) for d in details]
        self.app.call_from_thread(self.show, details, settings)

    def show(self, details: list, settings: list[dict]) -> None:
        series = []
        table = self.query_one(DataTable)
        table.clear()
        for i, (d, knobs) in enumerate(zip(details, settings, strict=True)):
            run = d.row.run
            series.append(Series(run.id, tuple((r.n, r.ratio, r.status) for r in d.rounds if r.ratio)))
            key = Text("●", style=COLOURS[i % len(COLOURS)])
            cells = (
                run.id,
                run.target,
                d.row.status,
                str(d.row.rounds),
                num(run.baseline),
                num(run.best),
                ratio(run.best_ratio),
                (run.best_commit or "")[:10],
                ", ".join(f"{k}={v}" for k, v in knobs.items()),
            )
            table.add_row(key, *map(line, cells))  # fmt: skip
        self.query_one(TrendChart).series = tuple(series)
