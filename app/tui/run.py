"""The run screen: rounds and trend, the selected round's diff, memory and notes, backlog, usage, the selected
round's transcripts, live events; pause, resume, stop, steer, revert and export."""

from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Log, Markdown, Static, TabbedContent, TabPane

from app import control
from app.export import ExportError, export
from app.store import Round, Store, StoreError
from app.tui import data, image, transcripts
from app.tui.data import RunDetail
from app.tui.dialogs import Ask, Confirm
from app.tui.runs import ratio, resume
from app.tui.screen import AtelierScreen
from app.tui.tables import sync
from app.tui.trend import Series, TrendChart

ROUND_COLUMNS = ("round", "task", "verdict", "reason", "metric", "× baseline", "× prev best", "commit")
USAGE_COLUMNS = ("role", "calls", "active", "share", "tokens in", "tokens out", "cost")
ISSUE_COLUMNS = ("issue", "status", "title", "source", "round", "last outcome")


def num(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "-"


def round_cells(r: Round, previous: dict[int, float]) -> tuple:
    verdict = {"accepted": "[green]accepted[/]", "rejected": "[red]rejected[/]"}.get(r.status, r.status)
    reason = (r.reason or "").splitlines()[0][:60] if r.reason else ""
    commit = (r.commit_sha or "")[:10]
    return (str(r.n), r.task, verdict, reason, num(r.metric), ratio(r.ratio), ratio(previous.get(r.n)), commit)


def event_line(e) -> str:
    where = f"round {e['round']:>3}" if e["round"] is not None else "run      "
    return f"{where}  {e['kind']:<9} {e['message']}"


def headline(d: RunDetail) -> str:
    r = d.row.run
    parts = [f"[b]{r.id}[/]", f"{r.target} on {r.executor}", f"policy {r.policy}", f"[b]{d.row.status}[/]"]
    if d.wanted and d.row.status in data.LIVE:
        parts.append(f"[yellow]{d.wanted} requested[/]")
    figures = f"{r.metric} ({r.direction} is better): baseline {num(r.baseline)} · best {num(r.best)}"
    figures += f" · [b]{ratio(r.best_ratio)}[/]" + (f" · noise ±{r.noise:.1%}" if r.noise else "")
    return "  ·  ".join(parts) + "\n" + figures


class RunScreen(AtelierScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("x", "stop", "Stop"),
        Binding("t", "steer", "Steer"),
        Binding("v", "revert", "Revert"),
        Binding("e", "export", "Export"),
        Binding("f", "diff", "Diff"),
    ]

    def __init__(self, run_id: str, tab: str = "tab-rounds"):
        super().__init__()
        self.run_id = run_id
        self.tab = tab
        self.detail: RunDetail | None = None
        self.last_event = 0
        self.shown_rounds: list[tuple] = []
        self.shown_memory = ""
        self.pending: list[str] = []
        self.diff_for: tuple | None = None
        self.diff_text = ""
        self.shown_usage: list[tuple] = []
        self.shown_backlog: list[tuple] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="run-head")
        with TabbedContent(id="tabs", initial=self.tab):
            with TabPane("Rounds", id="tab-rounds"), Vertical():
                yield TrendChart(id="trend")
                yield DataTable(id="rounds", cursor_type="row", zebra_stripes=True)
            with TabPane("Diff", id="tab-diff"):
                yield Static("select a round", id="diff-title")
                with VerticalScroll(id="diff-scroll"):
                    yield Static("", id="diff")
            with TabPane("Image", id="tab-image"):
                yield image.ImagePane(id="image")
            with TabPane("Memory", id="tab-memory"), VerticalScroll():
                yield Markdown("", id="memory")
            with TabPane("Backlog", id="tab-backlog"):
                yield DataTable(id="backlog", cursor_type="row", zebra_stripes=True)
                yield Static("", id="backlog-note")
            with TabPane("Usage", id="tab-usage"):
                yield DataTable(id="usage", cursor_type="row")
                yield Static("", id="usage-note")
            with TabPane("Transcripts", id="tab-transcripts"), VerticalScroll():
                yield Static("", id="transcripts")
            with TabPane("Events", id="tab-events"):
                yield Log(id="events", max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#rounds", DataTable).add_columns(*ROUND_COLUMNS)
        self.query_one("#usage", DataTable).add_columns(*USAGE_COLUMNS)
        self.query_one("#backlog", DataTable).add_columns(*ISSUE_COLUMNS)
        if self.tab == "tab-rounds":
            self.query_one("#rounds", DataTable).focus()
        self.load()
        self.set_interval(self.atelier.poll, self.load)

    @work(thread=True, exclusive=True, group="run")
    def load(self) -> None:
        try:
            detail = self.atelier.reader.detail(self.run_id, self.last_event)
        except StoreError as e:
            self.app.call_from_thread(self.put, "#run-head", f"[red]{e}[/]")
            return
        self.app.call_from_thread(self.show, detail)

    def show(self, d: RunDetail) -> None:
        """The headline, and the open tab only: a hidden table updated anyway would lay the screen out again."""
        if self.detail is None:
            self.atelier.settled()
        self.detail = d
        self.pending += [event_line(e) for e in d.events]
        if d.events:
            self.last_event = d.events[-1]["id"]
            d.events = []
        tab = self.query_one(TabbedContent).active
        with self.app.batch_update():
            self.put("#run-head", headline(d))
            if tab == "tab-rounds":
                self.show_rounds(d)
            elif tab == "tab-memory":
                self.show_memory(d)
            elif tab == "tab-usage":
                self.show_usage(d)
            elif tab == "tab-backlog":
                self.show_backlog(d)
            elif tab in ("tab-diff", "tab-transcripts"):
                self.show_diff()
            elif tab == "tab-events" and self.pending:
                self.query_one("#events", Log).write_lines(self.pending)
                self.pending = []

    @on(TabbedContent.TabActivated)
    def tab_opened(self) -> None:
        if self.detail is not None:
            self.show(self.detail)

    def show_rounds(self, d: RunDetail) -> None:
        run = d.row.run
        previous = data.ratio_to_previous(d.rounds, run.direction, run.baseline)
        shown = [round_cells(r, previous) for r in d.rounds]
        if shown == self.shown_rounds:
            return
        table = self.query_one("#rounds", DataTable)
        cursor = table.cursor_row
        if sync(table, self.shown_rounds, shown):
            table.move_cursor(row=min(cursor, max(table.row_count - 1, 0)))
        self.shown_rounds = shown
        points = tuple((r.n, r.ratio, r.status) for r in d.rounds if r.ratio)
        self.query_one(TrendChart).series = (Series(run.id, points),)
        self.show_diff()

    def show_memory(self, d: RunDetail) -> None:
        text = d.memory
        if d.notes:
            text += "\n\n## Notes for the next round\n\n" + "\n".join(f"- {n}" for n in d.notes)
        if text != self.shown_memory:
            self.shown_memory = text
            self.query_one("#memory", Markdown).update(text)

    def show_usage(self, d: RunDetail) -> None:
        table = self.query_one("#usage", DataTable)
        total = sum(u["active_s"] or 0 for u in d.usage) or 1
        rows = [
            (u["role"], str(u["calls"]), f"{u['active_s'] or 0:.1f} s", f"{(u['active_s'] or 0) / total:.0%}",
             str(u["tokens_in"]), str(u["tokens_out"]), f"${u['cost'] or 0:.2f}")
            for u in d.usage
        ]  # fmt: skip
        if rows != self.shown_usage:
            sync(table, self.shown_usage, rows)
            self.shown_usage = rows
        note = "" if rows else "No usage recorded: the offline tuner makes no LLM calls."
        self.put("#usage-note", note)

    def show_backlog(self, d: RunDetail) -> None:
        rows = [
            (f"#{i.id}", i.status, i.title, i.source, str(i.round or "-"), (i.history.splitlines() or [""])[-1][:60])
            for i in d.issues
        ]
        if rows != self.shown_backlog:
            sync(self.query_one("#backlog", DataTable), self.shown_backlog, rows)
            self.shown_backlog = rows
        note = "" if rows else f"No backlog: the {d.row.run.policy} policy keeps none (the issues policy does)."
        self.put("#backlog-note", note)

    def selected(self) -> Round | None:
        table = self.query_one("#rounds", DataTable)
        if self.detail is None or not table.row_count:
            return None
        n = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or 0)
        return next((r for r in self.detail.rounds if r.n == n), None)

    @on(DataTable.RowHighlighted, "#rounds")
    def round_highlighted(self) -> None:
        self.show_diff()

    @on(DataTable.RowSelected, "#rounds")
    def round_selected(self) -> None:
        self.action_diff()

    def show_diff(self) -> None:
        r = self.selected()
        if r is None or self.detail is None:
            return
        key = (r.n, r.commit_sha, r.status)
        if key != self.diff_for:
            self.diff_for = key
            self.load_diff(r)

    @work(thread=True, exclusive=True, group="diff")
    def load_diff(self, r: Round) -> None:
        assert self.detail is not None
        run = self.detail.row.run
        text = data.diff(run, r)
        body = Syntax(text, "diff", theme="ansi_dark").highlight(text) if text else Text("(no change recorded)")
        said = (
            transcripts.text(run.path, r.n)
            or f"No transcripts for round {r.n}: the {run.policy} policy makes no LLM calls."
        )
        self.app.call_from_thread(self.show_diff_text, r, text, body)
        self.app.call_from_thread(self.query_one(image.ImagePane).show, image.render(run.path, r.n))
        self.app.call_from_thread(self.query_one("#transcripts", Static).update, Text(said))

    def show_diff_text(self, r: Round, text: str, body: Text) -> None:
        """The diff, highlighted in the worker: the UI thread only lays the text out."""
        self.diff_text = text
        where = (r.commit_sha or "")[:12] or "no commit"
        self.query_one("#diff-title", Static).update(f"round {r.n} · {r.task} · {r.status} · {where}")
        self.query_one("#diff", Static).update(body)

    def action_diff(self) -> None:
        self.query_one(TabbedContent).active = "tab-diff"

    def status(self) -> str:
        return self.detail.row.status if self.detail else ""

    def action_pause(self) -> None:
        if self.status() != "running":
            self.notify(f"the run is {self.status()}: only a running run can pause", severity="warning")
            return
        self.atelier.act(control.request, self.run_id, "pause", done="pause requested: the run pauses at the next step")

    def action_resume(self) -> None:
        if self.detail is not None:
            resume(self.app, self.detail.row)

    def action_stop(self) -> None:
        if self.status() not in data.LIVE:
            self.notify(f"the run is {self.status()}: nothing to stop", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.atelier.act(control.request, self.run_id, "stop", done="stop requested")

        message = "Stop this run?\nThe round in progress is discarded; resume later carries on from the best stack."
        self.app.push_screen(Confirm(message, "Stop"), answered)

    def action_steer(self) -> None:
        def answered(text: str | None) -> None:
            if text:
                self.atelier.act(control.add_note, self.run_id, text, done="note added for the next round")

        self.app.push_screen(
            Ask("Steer: a note the Orchestrator reads next round", "e.g. try a larger batch"), answered
        )

    def action_revert(self) -> None:
        r = self.selected()
        if r is None or r.status != "accepted":
            self.notify("select an accepted round to revert to", severity="warning")
            return
        if self.status() in data.LIVE:
            self.notify("stop the run before reverting it", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.atelier.act(control.revert, self.run_id, r.n, done=f"reverted to round {r.n}")

        message = f"Revert the run to round {r.n}?\nLater accepted rounds are marked reverted (their commits are kept)."
        self.app.push_screen(Confirm(message, "Revert"), answered)

    def action_export(self) -> None:
        default = str(Path.cwd() / f"atelier-{self.run_id}")

        def answered(dest: str | None) -> None:
            if dest:
                self.export(Path(dest).expanduser())

        self.app.push_screen(Ask("Export the best stack to this folder", value=default), answered)

    @work(thread=True, group="export")
    def export(self, dest: Path) -> None:
        try:
            store = Store(self.atelier.reader.path, timeout=5)
            try:
                out = export(store, self.run_id, dest)
            finally:
                store.close()
        except (ExportError, StoreError, OSError) as e:
            self.app.call_from_thread(self.notify, f"export failed: {e}", severity="error", timeout=10)
            return
        self.app.call_from_thread(self.notify, f"exported to {out} (see its README.md)", timeout=10)
