"""The run screen: rounds and trend, the selected round's diff, memory and notes, backlog, usage, the selected
round's transcripts, live events; a round's detail; pause, resume, stop, steer, budgets, park or drop an issue,
revert and export. Every text from the store, the run folder or an agent is shown literally (app/tui/literal.py)."""

import time
from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Log, Static, TabbedContent, TabPane

from app import control
from app.export import ExportError, export
from app.store import Round, Store, StoreError
from app.tui import data, image, transcripts
from app.tui.cells import event_line, headline, round_cells
from app.tui.data import RunDetail
from app.tui.dialogs import Ask, Budgets, Confirm
from app.tui.literal import clean, line, lit
from app.tui.runs import resume
from app.tui.screen import AtelierScreen
from app.tui.tables import sync
from app.tui.trend import FEW, Series, TrendChart

ROUND_COLUMNS = ("round", "task", "verdict", "reason", "metric", "× baseline", "× prev best", "commit")
USAGE_COLUMNS = ("role", "calls", "active", "share", "tokens in", "tokens out", "cost")
ISSUE_COLUMNS = ("issue", "status", "title", "source", "round", "last outcome")
NARROW_ROUNDS = (0, 1, 2, 3, 5)  # the round columns an 80-column terminal shows
WIDE = 110
TABS = ("tab-rounds", "tab-diff", "tab-image", "tab-memory", "tab-backlog", "tab-usage", "tab-transcripts",
        "tab-events")  # fmt: skip


class RunScreen(AtelierScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("x", "stop", "Stop"),
        Binding("t", "steer", "Steer"),
        Binding("v", "revert", "Revert", show=False),
        Binding("e", "export", "Export"),
        Binding("f", "diff", "Diff", show=False),
        Binding("b", "budgets", "Budgets"),
        Binding("k", "issue('park')", "Park", show=False),
        Binding("o", "issue('open')", "Open issue", show=False),
        Binding("d", "issue('drop')", "Drop", show=False),
        *(Binding(str(i + 1), f"tab('{tab}')", tab[4:].title(), show=False) for i, tab in enumerate(TABS)),
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
        self.said: tuple[float, str] = (0.0, "")
        self.narrow = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="run-head")
        yield Static("", id="run-doing", classes="hidden")
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
                yield Static("", id="memory")
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
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.set_columns()
        self.query_one("#usage", DataTable).add_columns(*USAGE_COLUMNS)
        self.query_one("#backlog", DataTable).add_columns(*ISSUE_COLUMNS)
        if self.tab == "tab-rounds":
            self.query_one("#rounds", DataTable).focus()
        self.load()
        self.set_interval(self.atelier.poll, self.load)

    def size_chart(self) -> None:
        """Bars take a line a round (up to three); a plot takes 10 lines, 6 on a short terminal."""
        chart = self.query_one(TrendChart)
        few = sum(len(s.points) for s in chart.series)
        height = few + 2 if few <= FEW else (6 if self.size.height < 32 else 10)
        if chart.styles.height is None or chart.styles.height.value != height:
            chart.styles.height = height

    def on_resize(self) -> None:
        narrow = self.size.width < WIDE
        self.size_chart()
        if narrow != self.narrow:
            self.narrow = narrow
            self.set_columns()
            if self.detail is not None:
                self.show_rounds(self.detail)

    def set_columns(self) -> None:
        table = self.query_one("#rounds", DataTable)
        table.clear(columns=True)
        table.add_columns(*(c for i, c in enumerate(ROUND_COLUMNS) if not self.narrow or i in NARROW_ROUNDS))
        self.shown_rounds = []

    @work(thread=True, exclusive=True, group="run")
    def load(self) -> None:
        try:
            detail = self.atelier.reader.detail(self.run_id, self.last_event)
        except StoreError as e:
            self.app.call_from_thread(self.put, "#run-head", lit(str(e), style="red"))
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
            self.said = (d.events[-1]["ts"], f"{d.events[-1]['kind']}: {d.events[-1]['message']}")
            d.events = []
        tab = self.query_one(TabbedContent).active
        with self.app.batch_update():
            self.put("#run-head", headline(d))
            doing = self.query_one("#run-doing", Static)
            if doing.display != (d.row.status in data.LIVE):
                doing.display = d.row.status in data.LIVE
            self.put("#run-doing", self.doing(d), layout=False)
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

    def doing(self, d: RunDetail) -> str:
        """What a live run did last and how long ago: progress through the baseline and every long step."""
        when, said = self.said
        if not said:
            return ""
        said = said.splitlines()[0][:100]
        since = time.strftime("%H:%M:%S", time.localtime(when))
        return f"{since} {said}" + (f" · {d.samples}" if d.samples else "")

    def action_tab(self, tab: str) -> None:
        """Switch tab by its number, and put the keys on what it shows (so enter opens a round, ↑↓ move)."""
        self.query_one(TabbedContent).active = tab
        focus = {"tab-rounds": "#rounds", "tab-backlog": "#backlog", "tab-usage": "#usage", "tab-events": "#events"}
        if tab in focus:
            self.query_one(focus[tab]).focus()

    @on(TabbedContent.TabActivated)
    def tab_opened(self) -> None:
        if self.detail is not None:
            self.show(self.detail)

    def show_rounds(self, d: RunDetail) -> None:
        run = d.row.run
        previous = data.ratio_to_previous(d.rounds, run.direction, run.baseline)
        cut = 30 if self.narrow else 60
        shown = [round_cells(r, previous, cut) for r in d.rounds]
        if self.narrow:
            shown = [tuple(c for i, c in enumerate(row) if i in NARROW_ROUNDS) for row in shown]
        if shown == self.shown_rounds:
            return
        table = self.query_one("#rounds", DataTable)
        cursor = table.cursor_row
        if sync(table, self.shown_rounds, shown):
            table.move_cursor(row=min(cursor, max(table.row_count - 1, 0)))
        self.shown_rounds = shown
        points = tuple((r.n, r.ratio, r.status) for r in d.rounds if r.ratio)
        chart = self.query_one(TrendChart)
        chart.series = (Series(run.id, points),)
        self.size_chart()
        self.show_diff()

    def show_memory(self, d: RunDetail) -> None:
        text = d.memory
        if d.notes:
            text += "\n\n## Notes for the next round\n\n" + "\n".join(f"- {n}" for n in d.notes)
        if text != self.shown_memory:
            self.shown_memory = text
            self.query_one("#memory", Static).update(lit(text))

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
            (f"#{i.id}", i.status, i.title, i.source, str(i.round or "-"), (i.history.splitlines() or [""])[-1][:80])
            for i in d.issues
        ]
        if rows != self.shown_backlog:
            sync(self.query_one("#backlog", DataTable), self.shown_backlog, rows)
            self.shown_backlog = rows
        note = "k park the selected issue (the Orchestrator skips it) · o open it again · d drop it"
        if not rows:
            note = f"No backlog: the {d.row.run.policy} policy keeps none (the issues policy does)."
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
        from app.tui.detail import RoundScreen

        r = self.selected()
        if r is not None and self.detail is not None:
            self.app.push_screen(RoundScreen(self.detail.row.run, r))

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
        body = (
            Syntax(clean(text), "diff", theme="ansi_dark").highlight(clean(text))
            if text
            else lit("(no change recorded)")
        )
        said = (
            transcripts.text(run.path, r.n)
            or f"No transcripts for round {r.n}: the {run.policy} policy makes no LLM calls."
        )
        self.app.call_from_thread(self.show_diff_text, r, text, body)
        self.app.call_from_thread(self.query_one(image.ImagePane).show, image.render(run.path, r.n))
        self.app.call_from_thread(self.query_one("#transcripts", Static).update, lit(said))

    def show_diff_text(self, r: Round, text: str, body: Text) -> None:
        """The diff, highlighted in the worker: the UI thread only lays the text out."""
        self.diff_text = text
        where = (r.commit_sha or "")[:12] or "no commit"
        self.query_one("#diff-title", Static).update(line(f"round {r.n} · {r.task} · {r.status} · {where}"))
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
        if self.detail is None:
            return
        if self.detail.row.run.policy in ("tuner",):
            self.notify("the tuner policy reads no notes: steer an LLM policy's run", severity="warning")
            return
        live = self.status() in data.LIVE
        done = (
            "note added for the next round" if live else f"note kept: the run is {self.status()}, resume it to use it"
        )

        def answered(text: str | None) -> None:
            if text:
                self.atelier.act(control.add_note, self.run_id, text, done=done)

        self.app.push_screen(
            Ask("Steer: a note the Orchestrator reads next round", "e.g. try a larger batch"), answered
        )

    def action_budgets(self) -> None:
        if self.detail is None:
            return
        current = data.options(self.detail.row.run)
        live = self.status() in data.LIVE

        def answered(values: dict | None) -> None:
            if values:
                then = "the run takes them up at its next step" if live else "they apply when the run is resumed"
                self.atelier.act(control.set_budgets, self.run_id, values, done="budgets set: {result}; " + then)

        self.app.push_screen(Budgets(current), answered)

    def action_issue(self, change: str) -> None:
        """Park, open again or drop the backlog's selected issue (the backlog tab's keys)."""
        if self.query_one(TabbedContent).active != "tab-backlog":
            return
        table = self.query_one("#backlog", DataTable)
        if self.detail is None or not table.row_count:
            self.notify("no issue selected: the backlog is empty", severity="warning")
            return
        issue_id = int(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value).lstrip("#"))
        fn = {"park": control.park, "open": control.reopen_issue, "drop": control.drop}[change]
        self.atelier.act(fn, self.run_id, issue_id, done="{result}")

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
