"""The TUI driven with Pilot against real offline-tuner runs on the toy target, and against a fixed store."""

import asyncio
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_tui_snapshots import fixture_store
from textual.app import App
from textual.widgets import DataTable

from app import budgets, control
from app.cli import cmd_tui, parser
from app.run import Options
from app.store import Store
from app.tui import data
from app.tui.app import AtelierApp
from app.tui.compare import CompareScreen
from app.tui.dialogs import Budgets, Confirm, Help
from app.tui.launch import LaunchScreen
from app.tui.run import RunScreen
from app.tui.runs import RunsScreen
from app.tui.tables import sync
from app.tui.trend import Series, TrendChart
from conftest import TOY, atelier
from test_agents import key, llm  # noqa: F401 - the scripted LLM's fixtures
from test_target import one_repeat

SIZE = (140, 40)


@pytest.fixture(scope="module")
def quick_bundle(tmp_path_factory, toy_bundle) -> Path:
    """The toy bundle benchmarked once per side in a round, for the module's real runs."""
    bundle = tmp_path_factory.mktemp("tui-toy") / "toy"
    shutil.copytree(toy_bundle, bundle)
    return one_repeat(bundle)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, quick_bundle) -> tuple[Path, str]:
    """One real two-round run, made once for the module."""
    home = tmp_path_factory.mktemp("tui-home")
    atelier("run", str(quick_bundle), "--max-rounds", "2", "--no-confirm", home=home, check=True)
    [run] = Store(home / "atelier.db").runs()
    return home, run.id


def drive(app: AtelierApp, script, size=SIZE) -> None:
    async def main():
        async with app.run_test(size=size) as pilot:
            await script(pilot)

    asyncio.run(main())


async def until(pilot, condition, timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


def cell(table, row: int, column: int) -> str:
    return str(table.get_row_at(row)[column])


def test_browse_a_real_run(finished, monkeypatch):
    home, run_id = finished
    monkeypatch.setenv("ATELIER_HOME", str(home))

    async def script(pilot):
        app = pilot.app
        table = app.screen.query_one("#runs")
        await until(pilot, lambda: table.row_count == 1, what="the run listed")
        assert [cell(table, 0, i) for i in (1, 2, 3, 4, 5, 6)] == [run_id, "toy", "mlx", "tuner", "done", "2"]
        assert cell(table, 0, 7).endswith("×") and cell(table, 0, 8) == "$0.00"
        await pilot.press("slash", *"nothing-like-this")
        assert table.row_count == 0
        await pilot.press("escape", "s")
        assert table.row_count == 1 and app.screen.sort == "best ×"
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        screen = app.screen
        rounds = screen.query_one("#rounds")
        await until(pilot, lambda: rounds.row_count == 2, what="two rounds")
        assert cell(rounds, 0, 1) == "cache=kv" and "accepted" in cell(rounds, 0, 2)
        assert cell(rounds, 0, 5).endswith("×") and len(cell(rounds, 0, 7)) == 10
        assert screen.query_one("#trend").series[0].points[0][2] == "accepted"
        await until(pilot, lambda: '+default = "kv"' in screen.diff_text, what="round 1's diff")
        await pilot.press("f")
        assert screen.query_one("#tabs").active == "tab-diff"
        assert screen.detail.memory.startswith("# Memory")
        screen.query_one("#tabs").active = "tab-events"
        await until(pilot, lambda: len(screen.query_one("#events").lines) > 3, what="the event log")
        assert "makes no LLM calls" in str(screen.query_one("#transcripts").content)
        await pilot.press("question_mark")
        assert isinstance(app.screen, Help)
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, RunsScreen)

    drive(AtelierApp(poll=0.3), script)


def test_steer_export_and_revert_a_real_run(finished, monkeypatch, tmp_path):
    home, run_id = finished
    monkeypatch.setenv("ATELIER_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    store = Store(home / "atelier.db")

    async def script(pilot):
        app = pilot.app
        await until(pilot, lambda: app.screen.query_one("#runs").row_count == 1)
        await pilot.press("enter")
        screen = app.screen
        await until(pilot, lambda: screen.query_one("#rounds").row_count == 2)
        await pilot.press("t")
        assert app.screen is screen, "the tuner reads no notes: steering it asks nothing"
        control.add_note(store, run_id, "try a bigger batch")
        await pilot.press("b")
        assert isinstance(app.screen, Budgets) and app.screen.query_one("#max_rounds").value == "2"
        app.screen.query_one("#max_rounds").value = "0"
        await pilot.press("enter")
        assert "at least 1, not '0'" in str(app.screen.query_one("#budgets-error").content)
        app.screen.query_one("#max_rounds").value = "5"
        await pilot.press("enter")
        await until(pilot, lambda: json.loads(store.run(run_id).options)["max_rounds"] == 5, what="the budget")
        assert app.screen is screen and json.loads(store.run(run_id).options)["plateau"] == 6
        screen.query_one("#tabs").active = "tab-memory"
        memory = screen.query_one("#memory")
        await until(pilot, lambda: "try a bigger batch" in str(memory.content), what="the note shown")
        screen.query_one("#tabs").active = "tab-rounds"
        await pilot.press("e", "enter")
        readme = tmp_path / f"atelier-{run_id}" / "README.md"
        await until(pilot, readme.exists, timeout=60, what="the export")
        assert "`cache` = `'kv'`" in readme.read_text()
        await pilot.press("v")
        assert isinstance(app.screen, Confirm)
        await pilot.press("n")
        assert isinstance(app.screen, RunScreen) and not [e for e in store.events(run_id) if e["kind"] == "revert"]
        await pilot.press("v", "y")
        await until(pilot, lambda: [e for e in store.events(run_id) if e["kind"] == "revert"], what="the revert")

    drive(AtelierApp(poll=0.3), script)
    first = store.rounds(run_id)[0]
    assert store.run(run_id).best_commit == first.commit_sha


@pytest.mark.slow
def test_launch_watch_pause_resume_stop_and_resume_a_live_run(quick_bundle, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ATELIER_HOME", str(home))
    seen: list[int] = []

    def status(screen) -> str:
        return screen.detail.row.status if screen.detail else ""

    async def watch(pilot, screen, wanted: str, timeout: float = 240):
        rounds = screen.query_one("#rounds")

        def reached():
            if not seen or seen[-1] != rounds.row_count:
                seen.append(rounds.row_count)
            return status(screen) == wanted

        try:
            await until(pilot, reached, timeout, what=f"status {wanted}")
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen shows: {screen.query_one('#run-head').content}") from None

    async def script(pilot):
        app = pilot.app
        notice = app.screen.query_one("#notice")
        await until(pilot, lambda: "No runs yet: press n" in str(notice.content), what="the first screen's words")
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, LaunchScreen)
        form.query_one("#target").value = str(quick_bundle)
        await until(pilot, lambda: form.valid, what="the target validated")
        form.query_one("#max_rounds").value = "2"
        await pilot.press("ctrl+s")
        opened = lambda: isinstance(app.screen, RunScreen) and app.screen.detail is not None  # noqa: E731
        await until(pilot, opened, timeout=120, what="the launched run opened")
        screen = app.screen
        await watch(pilot, screen, "running")
        await pilot.press("p")
        await watch(pilot, screen, "paused")
        paused_at = screen.query_one("#rounds").row_count
        await pilot.pause(1.5)
        assert status(screen) == "paused" and screen.query_one("#rounds").row_count == paused_at
        await pilot.press("r")
        await watch(pilot, screen, "running")
        await pilot.press("x", "y")
        await watch(pilot, screen, "interrupted")
        await pilot.press("r")
        await watch(pilot, screen, "done", timeout=300)

    drive(AtelierApp(poll=0.3), script)
    assert seen[0] == 0 and max(seen) >= 2 and seen == sorted(seen)
    [run] = Store(home / "atelier.db").runs()
    statuses = [r.status for r in Store(home / "atelier.db").rounds(run.id)]
    assert "accepted" in statuses and run.status == "done"
    kinds = [e["kind"] for e in Store(home / "atelier.db").events(run.id)]
    assert {"pause", "resume", "stop"} <= set(kinds) and kinds.count("baseline") == 2


def test_delete_asks_first(tmp_path, monkeypatch):
    db = fixture_store(tmp_path / "home", monkeypatch)

    async def script(pilot):
        table = pilot.app.screen.query_one("#runs")
        await until(pilot, lambda: table.row_count == 3)
        await pilot.press("down", "down", "d")
        assert isinstance(pilot.app.screen, Confirm)
        await pilot.press("n")
        assert table.row_count == 3
        await pilot.press("d", "y")
        await until(pilot, lambda: table.row_count == 2, what="the run deleted")

    drive(AtelierApp(db, poll=0.2), script)
    assert [r.id for r in Store(db).runs()] == ["toy-20260921-153320-e5f6", "toy-20260921-143320-c3d4"]
    assert not (tmp_path / "home" / "runs" / "toy-20260921-133320-a1b2").exists()


def test_resume_and_open_from_the_runs_screen(tmp_path, monkeypatch):
    db = fixture_store(tmp_path / "home", monkeypatch)
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "home"))
    spawned: list[list[str]] = []
    monkeypatch.setattr(data, "_spawn", lambda args, log, env: spawned.append(args[3:]) or 4242)

    async def script(pilot):
        app = pilot.app
        table = app.screen.query_one("#runs")
        await until(pilot, lambda: table.row_count == 3)
        assert [cell(table, i, 5) for i in range(3)] == ["failed", "interrupted", "done"]
        await pilot.press("down", "r")
        assert spawned == [["resume", "toy-20260921-143320-c3d4"]]
        await pilot.press("down", "r")
        assert len(spawned) == 1 and isinstance(app.screen, RunsScreen)
        await pilot.press("o")
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == "toy-20260921-133320-a1b2"

    drive(AtelierApp(db, poll=0.2), script)


def test_compare_needs_two_marked_runs(tmp_path, monkeypatch):
    db = fixture_store(tmp_path / "home", monkeypatch)

    async def script(pilot):
        app = pilot.app
        await until(pilot, lambda: app.screen.query_one("#runs").row_count == 3)
        await pilot.press("space", "c")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("down", "space", "c")
        assert isinstance(app.screen, CompareScreen)
        table = app.screen.query_one("#compare")
        await until(pilot, lambda: table.row_count == 2)
        assert len(app.screen.query_one("#compare-trend").series) == 2

    drive(AtelierApp(db, poll=0.2), script)


def notice_for(db: Path) -> str:
    text: list[str] = []

    async def script(pilot):
        notice = pilot.app.screen.query_one("#notice")
        await until(pilot, lambda: "error" in notice.classes, timeout=10, what="an error notice")
        text.append(str(notice.content))

    drive(AtelierApp(db, poll=0.2), script)
    return text[0]


def test_missing_old_and_locked_stores_read_as_messages(tmp_path):
    async def first_screen(pilot):
        notice = pilot.app.screen.query_one("#notice")
        await until(
            pilot, lambda: str(notice.content) == "No runs yet: press n to launch one.", what="the README's words"
        )
        assert "error" not in notice.classes

    drive(AtelierApp(tmp_path / "nowhere" / "atelier.db", poll=0.2), first_screen)

    old = tmp_path / "old.db"
    Store(old).db.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    assert "store schema version 0 is older than this Atelier can migrate" in notice_for(old)

    locked = tmp_path / "locked.db"
    Store(locked).close()
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO meta VALUES ('x', 'y')")
    try:
        assert "database is locked" in notice_for(locked)
    finally:
        holder.close()


def test_lists_fifty_runs(tmp_path, monkeypatch):
    """How fast is `atelier bench tui`'s job; here only that all fifty arrive, in order, and a filter narrows them."""
    db = fixture_store(tmp_path / "home", monkeypatch, extra_runs=47)

    async def script(pilot):
        table = pilot.app.screen.query_one("#runs")
        await until(pilot, lambda: table.row_count == 50, what="fifty runs listed")
        assert cell(table, 0, 1) == "toy-20260921-153320-e5f6" and cell(table, 49, 1) == "toy-20260920-000046-0000"
        await pilot.press("slash", *"000046")
        assert table.row_count == 1 and "1 of 50 runs" in str(pilot.app.screen.query_one("#runs-summary").content)

    drive(AtelierApp(db, poll=0.3), script)


def test_tables_update_in_place_and_widen_for_longer_cells():
    class One(App):
        def compose(self):
            yield DataTable()

    async def script(pilot):
        table = pilot.app.query_one(DataTable)
        table.add_columns("round", "verdict")
        first = [("1", "running")]
        assert not sync(table, [], first)
        then = [("1", "accepted"), ("2", "running")]
        assert not sync(table, first, then)
        await pilot.pause()
        assert [cell(table, i, 1) for i in (0, 1)] == ["accepted", "running"]
        assert table.ordered_columns[1].content_width == len("accepted")
        assert sync(table, then, [("2", "running")]) and table.row_count == 1

    drive(One(), script)


def test_tui_command_and_headless_no_args(tmp_path):
    assert parser().parse_args(["tui"]).handler is cmd_tui
    result = atelier(home=tmp_path)
    assert result.returncode == 0 and "usage: atelier" in result.stdout


@pytest.mark.slow
def test_backlog_and_transcripts_of_an_llm_run(toy, llm, home):  # noqa: F811
    from scripted_llm import call
    from test_agents import PASS, evaluator_reading, faster_implementer

    issue = {"title": "compile the forward", "detail": "mx.compile the step"}
    llm.add("orchestrator", call("submit", issue_id=1, new_issues=[issue], memory_edits=[]))
    llm.add("implementer", *faster_implementer())
    llm.add("judge", PASS)
    llm.add("evaluator", evaluator_reading())
    atelier("run", str(one_repeat(toy)), "--max-rounds", "1", "--no-confirm", home=home, check=True)
    [run] = Store(home / "atelier.db").runs()

    async def script(pilot):
        pilot.app.push_screen(RunScreen(run.id))
        await pilot.pause()
        screen = pilot.app.screen
        backlog, said = screen.query_one("#backlog"), screen.query_one("#transcripts")
        screen.query_one("#tabs").active = "tab-backlog"
        await until(pilot, lambda: backlog.row_count == 2, what="the backlog")
        assert [cell(backlog, 0, i) for i in (0, 1)] == ["#1", "done"]
        assert [cell(backlog, 1, i) for i in (1, 2, 3)] == ["open", "compile the forward", "orchestrator"]
        await until(pilot, lambda: "━━ implementer ━━" in str(said.content), what="round 1's transcripts")
        text = str(said.content)
        assert text.index("━━ orchestrator") < text.index("━━ implementer") < text.index("━━ judge")
        assert "→ edit(" in text and "→ submit(" in text

    drive(AtelierApp(home / "atelier.db"), script)


def test_budgets_have_one_check_for_the_cli_and_the_form(tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATELIER_CONFIG", str(tmp_path / "none.toml"))
    said = {}
    for flag, value in (("--max-rounds", "0"), ("--max-rounds", "1.5"), ("--max-minutes", "-3")):
        with pytest.raises(SystemExit):
            parser().parse_args(["run", "toy", flag, value])
    for name, value in (("max_rounds", "1.5"), ("max_minutes", "-3"), ("plateau", "0")):
        with pytest.raises(ValueError) as e:
            budgets.parse(name, value)
        said[name] = str(e.value)
    assert said["max_rounds"] == "max rounds: expected a whole number of at least 1, not '1.5'"
    assert said["max_minutes"] == "max minutes: expected a number of minutes above 0, not '-3'"
    assert parser().parse_args(["run", "toy", "--max-minutes", "1.5", "--plateau", "2"]).max_minutes == 1.5

    async def script(pilot):
        await pilot.press("n")
        form = pilot.app.screen
        assert [i.placeholder for i in form.query(".budget")] == ["12", "60", "6"]
        form.query_one("#target").value = str(TOY)
        await pilot.pause(0.3)
        form.query_one("#max_rounds").value = "1.5"
        await pilot.pause()
        check = str(form.query_one("#budget-check").content)
        assert said["max_rounds"] in check and form.query_one("#start").disabled
        await pilot.press("ctrl+s")
        assert pilot.app.screen is form
        pilot.app.deliver_screenshot("form.svg")
        saved = tmp_path / "home" / "screenshots" / "form.svg"
        await until(pilot, saved.exists, what="the screenshot saved although there is no ~/Downloads")

    monkeypatch.setenv("HOME", str(tmp_path))
    drive(AtelierApp(poll=0.3), script, size=(80, 24))


def test_trend_labels_match_the_points_and_few_points_are_bars():
    class One(App):
        def compose(self):
            yield TrendChart()

    async def script(pilot):
        chart = pilot.app.query_one(TrendChart)
        chart.series = (Series("r", ((1, 1.2, "accepted"), (2, 3.58, "accepted"), (3, 0.9, "rejected"))),)
        await pilot.pause()
        bars = [str(line) for line in chart.render().split()]
        assert len(bars) == 4 and "round 2   ● accepted   3.58× █" in bars[2]
        chart.series = (Series("r", chart.series[0].points + ((4, 2.0, "rejected"),)),)
        await pilot.pause()
        rows = [str(line) for line in chart.render().split()]
        assert rows[0].startswith(" 3.58×│") and "●" in rows[0] and rows[-2].startswith(" 0.90×│") and "×" in rows[-2]

    drive(One(), script, size=(60, 12))


def test_a_launch_that_dies_is_reaped_and_its_error_read(tmp_path):
    log = tmp_path / "launch.log"
    script = "import sys; print('atelier run: error: argument --max-rounds: bad'); sys.exit(2)"
    pid = data._spawn([sys.executable, "-c", script], log, dict(os.environ))
    problem = data.failed_start(pid, log, wait_s=30)
    assert problem.startswith("exit code 2: atelier run: error: argument --max-rounds: bad")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_budgets_and_backlog_changed_from_outside(tmp_path, monkeypatch):
    db = fixture_store(tmp_path / "home", monkeypatch)
    store = Store(db)
    run_id = "toy-20260921-133320-a1b2"
    with pytest.raises(ValueError, match="plateau: expected a whole number"):
        control.set_budgets(store, run_id, {"plateau": 0})
    assert control.set_budgets(store, run_id, {"max_rounds": 4, "max_minutes": 2.5}) == "max rounds 4, max minutes 2.5"
    said: list[str] = []
    playing = SimpleNamespace(store=store, id=run_id, options=Options(), say=lambda n, kind, m: said.append(m))
    control.checkpoint(playing)
    assert (playing.options.max_rounds, playing.options.max_minutes, playing.options.plateau) == (4, 2.5, 6)
    assert said == ["max rounds: 12 → 4", "max minutes: 60 → 2.5"]
    control.checkpoint(playing)
    assert len(said) == 2
    untouched = SimpleNamespace(store=store, id="toy-20260921-143320-c3d4", options=Options(max_rounds=20), say=None)
    control.checkpoint(untouched)
    assert untouched.options.max_rounds == 20, "budgets set in the run's own process stay until one is set outside"
    first = store.add_issue(run_id, "compile the forward", "", "orchestrator", 1)
    control.park(store, run_id, first)
    assert store.issues(run_id)[0].status == "parked"
    control.reopen_issue(store, run_id, first)
    control.drop(store, run_id, first)
    assert store.issues(run_id)[0].status == "dropped"
    assert store.issues(run_id)[0].history.splitlines()[-1] == "dropped by the user"


def test_a_launch_that_fails_is_shown_in_the_app(toy_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATELIER_CONFIG", str(tmp_path / "none.toml"))
    spawn = data._spawn
    failing = "import sys; print('atelier: error: the [compile] step broke'); sys.exit(1)"
    monkeypatch.setattr(data, "_spawn", lambda args, log, env: spawn([sys.executable, "-c", failing], log, env))

    def said(app) -> str:
        return "\n".join(n.message for n in app._notifications)

    async def script(pilot):
        await pilot.press("n")
        form = pilot.app.screen
        form.query_one("#target").value = str(toy_bundle)
        await until(pilot, lambda: form.valid, what="the target validated")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "did not start" in said(pilot.app), timeout=30, what="the failure shown")
        assert "exit code 1: atelier: error: the [compile] step broke" in said(pilot.app)
        assert isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.waiting_for is None

    drive(AtelierApp(poll=0.3), script)
