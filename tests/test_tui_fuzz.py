"""Markup-like and control-character text through every field the TUI renders: a store whose every string is
hostile, the launch form typed into; nothing crashes and every word is on screen (control characters as escapes)."""

import json
from pathlib import Path

from rich.text import Text
from test_tui import cell, drive, until
from test_tui_snapshots import T0, run_row

from app.store import Store
from app.tui.app import AtelierApp
from app.tui.detail import RoundScreen
from app.tui.dialogs import Confirm
from app.tui.launch import LaunchScreen
from app.tui.literal import clean, line
from app.tui.run import RunScreen

HOSTILE = (
    "[/x] [/dev/shm] is full [compile] [b]bold[/b] [@click=app.quit]q[/] [red [model] [llm] \\[x] :rocket: "
    "**md** `code` [link](http://x) \x1b[31mred\x1b[0m bell\x07 cr\rend tab\there nul\x00 del\x7f"
)
RUN = "toy-20260921-133320-f00d"


def hostile(what: str) -> str:
    return f"{what}: {HOSTILE}"


def store_of_hostile_text(home: Path) -> Path:
    run_dir = home / "runs" / "[/x]" / RUN
    (run_dir / "transcripts" / "round-1").mkdir(parents=True)
    (run_dir / "profiles" / "round-1").mkdir(parents=True)
    (run_dir / "memory.md").write_text(hostile("memory"))
    said = {"role": "user", "content": hostile("transcript")}
    entries = [{"ts": T0, "kind": "request", "messages": [said]}, {"ts": T0, "kind": "event", "x": hostile("e")}]
    (run_dir / "transcripts" / "round-1" / "implementer.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in entries)
    )
    (run_dir / "profiles" / "round-1" / "candidate.txt").write_text(hostile("profile"))
    store = Store(home / "atelier.db")
    store.add_run(run_row(RUN, run_dir, 0, target=hostile("target"), executor=hostile("executor"),
                          metric=hostile("metric"), status="failed"))  # fmt: skip
    store.start_round(RUN, 1, hostile("task"), {}, "0" * 40)
    store.end_round(RUN, 1, "rejected", hostile("reason") + "\nsecond line " + HOSTILE, metric=0.3, ratio=3.0)
    store.add_verdict(RUN, 1, "judge", False, [hostile("verdict")], [hostile("detail")])
    store.add_metrics(RUN, 1, "candidate", 0, {hostile("sample"): 0.3})
    store.event(RUN, 1, "failed", hostile("event"))
    store.add_usage(RUN, 1, hostile("role"), calls=1)
    store.add_issue(RUN, hostile("issue"), "detail", hostile("source"), 1)
    store.db.execute("INSERT INTO notes (run_id, ts, text) VALUES (?,?,?)", (RUN, T0, hostile("note")))
    store.close()
    return home / "atelier.db"


def plain(widget) -> str:
    content = widget.content if hasattr(widget, "content") else widget.renderable
    return content.plain if isinstance(content, Text) else str(content)


def test_hostile_text_is_shown_literally_everywhere(tmp_path, monkeypatch):
    db = store_of_hostile_text(tmp_path / "home")
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATELIER_CONFIG", str(tmp_path / "none.toml"))
    shown = clean(HOSTILE)
    one_line = line(HOSTILE).plain

    async def script(pilot):
        app = pilot.app
        runs = app.screen.query_one("#runs")
        await until(pilot, lambda: runs.row_count == 1, what="the run listed")
        assert one_line in cell(runs, 0, 2)
        await pilot.press("d")
        assert isinstance(app.screen, Confirm) and "[/x]" in plain(app.screen.query_one(".dialog-message"))
        await pilot.press("n", "enter")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        rounds = screen.query_one("#rounds")
        await until(pilot, lambda: rounds.row_count == 1, what="the round")
        head = plain(screen.query_one("#run-head"))
        assert all(clean(hostile(w)) in head for w in ("target", "executor", "metric")), head
        assert one_line in cell(rounds, 0, 1) and cell(rounds, 0, 3).startswith("reason: [/x] [/dev/shm]")
        for i, tab in enumerate(("diff", "image", "memory", "backlog", "usage", "transcripts", "events"), 2):
            await pilot.press(str(i))
            assert screen.query_one("#tabs").active == f"tab-{tab}"
            await pilot.pause(0.1)
        await until(pilot, lambda: any(shown in line_ for line_ in screen.query_one("#events").lines), what="events")
        assert clean(hostile("memory")) in plain(screen.query_one("#memory"))
        assert clean(hostile("note")) in plain(screen.query_one("#memory"))
        said = plain(screen.query_one("#transcripts"))
        assert clean(hostile("transcript")) in said and "profile" in said
        backlog = screen.query_one("#backlog")
        assert one_line in cell(backlog, 0, 2) and one_line in cell(backlog, 0, 3)
        assert one_line in cell(screen.query_one("#usage"), 0, 0)
        await pilot.press("5", "k")
        await until(pilot, lambda: Store(db).issues(RUN)[0].status == "parked", what="the issue parked")
        await pilot.press("1", "enter")
        assert isinstance(app.screen, RoundScreen)
        detail = app.screen.query_one("#round-detail")
        await until(pilot, lambda: "metric samples" in plain(detail), what="the round's detail")
        text = plain(detail)
        for what in ("task", "reason", "verdict", "detail", "sample", "profile"):
            assert clean(hostile(what)) in text, what
        assert "second line " + shown in text
        app.export_screenshot()
        await pilot.press("escape", "escape", "n")
        form = app.screen
        assert isinstance(form, LaunchScreen)
        form.query_one("#target").value = "/tmp/[/x]"
        await until(pilot, lambda: "/tmp/[/x]" in plain(form.query_one("#target-check")), what="the target check")
        form.query_one("#max_rounds").value = "[/x]\x1b"
        await pilot.pause(0.2)
        assert "not '[/x]\\x1b'" in plain(form.query_one("#budget-check"))
        app.export_screenshot()

    drive(AtelierApp(db, poll=0.2), script)
