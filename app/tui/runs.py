"""The runs screen: every run in the store, filtered and sorted; open, mark, compare, resume, delete, launch."""

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Static

from app.store import StoreError
from app.tui import data
from app.tui.data import RunRow
from app.tui.dialogs import Confirm
from app.tui.screen import AtelierScreen
from app.tui.tables import sync

COLUMNS = ("", "run", "target", "executor", "policy", "status", "rounds", "best ×", "cost", "started")
NARROW = (0, 1, 2, 4, 5, 6, 7)  # the columns an 80-column terminal shows
WIDE = 110
SORTS = {
    "started": lambda r: -r.run.started,
    "best ×": lambda r: -(r.run.best_ratio or 0),
    "status": lambda r: r.status,
    "target": lambda r: r.run.target,
    "rounds": lambda r: -r.rounds,
}


def ratio(value: float | None) -> str:
    return f"{value:.2f}×" if value else "-"


def cells(row: RunRow, marked: bool) -> tuple:
    r = row.run
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started))
    return ("◆" if marked else " ", r.id, r.target, r.executor, r.policy, row.status, str(row.rounds),
            ratio(r.best_ratio), f"${row.cost:.2f}", started)  # fmt: skip


class RunsScreen(AtelierScreen):
    BINDINGS = [
        Binding("o", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("n", "launch", "New run"),
        Binding("r", "resume", "Resume"),
        Binding("d", "delete", "Delete"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.rows: list[RunRow] = []
        self.marked: set[str] = set()
        self.sort = "started"
        self.shown: list[tuple] = []
        self.waiting_for: int | None = None
        self.columns: tuple[int, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="notice")
        yield Input(placeholder="filter: any text in target, status, policy, id…", id="filter")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-summary")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.set_interval(self.atelier.poll, self.poll)

    def on_resize(self) -> None:
        """All the columns on a wide terminal, the ones that matter most on a narrow one."""
        columns = tuple(range(len(COLUMNS))) if self.size.width >= WIDE else NARROW
        if columns == self.columns:
            return
        self.columns = columns
        table = self.query_one(DataTable)
        table.clear(columns=True)
        for i in columns:
            table.add_column(COLUMNS[i], key=COLUMNS[i] or "mark")
        self.shown = []
        self.render_table()

    def on_screen_resume(self) -> None:
        self.load()

    def poll(self) -> None:
        if self.app.screen is self:
            self.load()

    @work(thread=True, exclusive=True, group="runs")
    def load(self) -> None:
        try:
            rows = self.atelier.reader.runs() if self.atelier.reader.path.exists() else []
        except StoreError as e:
            self.app.call_from_thread(self.show_error, str(e))
            return
        self.app.call_from_thread(self.show, rows)

    def show_error(self, message: str) -> None:
        self.put("#notice", message)
        self.query_one("#notice", Static).add_class("error")

    def show(self, rows: list[RunRow]) -> None:
        if not self.rows and rows:
            self.atelier.settled()
        self.rows = rows
        started = next((r for r in rows if self.waiting_for and r.run.pid == self.waiting_for), None)
        if started is not None and self.app.screen is self:
            self.waiting_for = None
            self.app.push_screen(_run_screen(started.id))
        self.query_one("#notice", Static).remove_class("error")
        self.put("#notice", "" if rows else "No runs yet: press n to launch one.")
        self.render_table()

    def render_table(self) -> None:
        if not self.columns:
            return
        text = self.query_one("#filter", Input).value.lower()
        rows = [r for r in self.rows if not text or text in " ".join(cells(r, False)).lower()]
        rows.sort(key=SORTS[self.sort])
        live = sum(r.status in data.LIVE for r in self.rows)
        summary = f"{len(rows)} of {len(self.rows)} runs · {live} going · sorted by {self.sort}"
        self.put("#runs-summary", summary + (f" · {len(self.marked)} marked" * bool(self.marked)))
        shown = [tuple(c for i, c in enumerate(cells(r, r.id in self.marked)) if i in self.columns) for r in rows]
        if shown == self.shown:
            return
        table = self.query_one(DataTable)
        current = self.current()
        if sync(table, self.shown, shown, key=1) and current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current))
        self.shown = shown

    def current(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def row(self, run_id: str | None) -> RunRow | None:
        return next((r for r in self.rows if r.id == run_id), None)

    @on(Input.Changed, "#filter")
    def filter_changed(self) -> None:
        self.render_table()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one(DataTable).focus()

    @on(DataTable.RowSelected)
    def row_selected(self) -> None:
        self.action_open()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(DataTable).focus()

    def action_sort(self) -> None:
        names = list(SORTS)
        self.sort = names[(names.index(self.sort) + 1) % len(names)]
        self.render_table()

    def open_when_started(self, pid: int) -> None:
        """Open the run a launched process creates, once it is in the store."""
        self.waiting_for = pid

    def action_open(self) -> None:
        if run_id := self.current():
            self.app.push_screen(_run_screen(run_id))

    def action_mark(self) -> None:
        if run_id := self.current():
            self.marked ^= {run_id}
            self.render_table()

    def action_compare(self) -> None:
        from app.tui.compare import CompareScreen

        ids = [r.id for r in self.rows if r.id in self.marked]
        if len(ids) < 2:
            self.notify("mark two or more runs with space to compare them", severity="warning")
            return
        self.app.push_screen(CompareScreen(ids))

    def action_launch(self) -> None:
        from app.tui.launch import LaunchScreen

        self.app.push_screen(LaunchScreen())

    def action_resume(self) -> None:
        row = self.row(self.current())
        if row is not None:
            resume(self.app, row)

    def action_delete(self) -> None:
        row = self.row(self.current())
        if row is None:
            return
        if row.status in data.LIVE:
            self.notify(f"{row.id} is {row.status}: stop it first", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            from app import control

            if yes:
                self.marked.discard(row.id)
                self.atelier.act(control.delete, row.id, done="deleted {result}", then=lambda _: self.load())

        message = f"Delete run {row.id}?\nIts rounds, events and folder {row.run.dir} are removed for good."
        self.app.push_screen(Confirm(message, "Delete"), answered)


def resume(app, row: RunRow) -> None:
    """A paused run carries on; an interrupted or failed one restarts in the background from its best commit."""
    from app import control

    if row.status == "paused":
        app.act(control.request, row.id, "", done=f"{row.id}: resume requested")
    elif row.status in ("interrupted", "failed"):
        app.act(control.request, row.id, "")
        pid, log = data.resume(row.id)
        app.notify(f"resuming {row.id} in the background (pid {pid}, log {log})")
    else:
        app.notify(f"{row.id} is {row.status}: nothing to resume", severity="warning")


def _run_screen(run_id: str):
    from app.tui.run import RunScreen

    return RunScreen(run_id)
