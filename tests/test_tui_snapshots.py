"""Snapshots of the TUI's screens over a store written row by row: fixed ids, times, metrics and commits."""

import json
import time
from pathlib import Path

import pytest
from textual.widgets import Input

from app.store import Run, Store
from app.tui.app import AtelierApp
from app.workspace import Workspace
from conftest import TOY

SIZE = (160, 45)
NARROW = (80, 24)
T0 = 1_790_000_000.0  # 2026-09-21 13:33:20 UTC
DIRECTION = "lower"


def run_row(run_id: str, run_dir: Path, i: int, **values) -> Run:
    fields = dict(
        id=run_id, target="toy", target_dir=str(TOY), executor="mlx", policy="tuner", status="done",
        metric="decode_s", direction=DIRECTION, baseline=0.9, noise=0.05, best=0.3, best_commit=None,
        dir=str(run_dir), branch=f"atelier/{run_id}", pid=None, started=T0 + i * 3600, updated=T0 + i * 3600,
        options=json.dumps({"policy": "tuner", "max_rounds": 3}), manifest="{}",
    )  # fmt: skip
    return Run(**(fields | values))


def add_rounds(store: Store, run_id: str, rounds: list[tuple], starts: dict[int, str], commits: dict[int, str]):
    for n, task, status, metric, reason in rounds:
        store.start_round(run_id, n, task, {"knob": task.split("=")[0]}, starts.get(n, starts[1]))
        ratio = 0.9 / metric if metric else None
        store.end_round(run_id, n, status, reason, metric=metric, ratio=ratio, commit_sha=commits.get(n))
        store.db.execute("UPDATE rounds SET started=?, ended=? WHERE run_id=? AND n=?", (T0, T0 + 30, run_id, n))


def workspace(run_dir: Path, run_id: str) -> tuple[str, str, str]:
    """A real git workspace with the seed, an accepted round 1 and a rejected round 2: fixed dates, fixed shas."""
    ws = Workspace.create(run_dir / "workspace", TOY / "seed", f"atelier/{run_id}")
    seed = ws.head
    knobs = ws.path / "atelier.knobs.toml"
    knobs.write_text(knobs.read_text().replace('default = "none"', 'default = "kv"'))
    accepted = ws.commit("round 1: cache=kv")
    knobs.write_text(knobs.read_text().replace("default = false", "default = true"))
    rejected = ws.reject(2, "round 2 (rejected): compile=True", accepted)
    assert rejected is not None
    return seed, accepted, rejected


def transcripts(folder: Path) -> None:
    """Round 1's agent transcripts as the agents write them: requests, responses with tool calls, an event."""
    folder.mkdir(parents=True)
    system = {"role": "system", "content": "You are the Implementer. Change the stack to do the task; then submit."}
    task = {"role": "user", "content": "Task: keep keys and values between decoding steps (cache=kv)."}
    edit = {"function": {"name": "edit", "arguments": '{"path": "atelier.knobs.toml", "old": "none", "new": "kv"}'}}
    said = {"role": "assistant", "content": "The knob file sets the cache; I switch it to kv.", "tool_calls": [edit]}
    done = {"function": {"name": "submit", "arguments": '{"summary": "cache=kv"}'}}
    implementer = [
        {"ts": T0, "kind": "request", "messages": [system, task]},
        {"ts": T0 + 1, "kind": "response", "choices": [{"message": said}]},
        {"ts": T0 + 2, "kind": "request", "messages": [system, task, said, {"role": "tool", "content": "edited"}]},
        {"ts": T0 + 3, "kind": "response", "choices": [{"message": {"role": "assistant", "tool_calls": [done]}}]},
    ]
    orchestrator = [
        {"ts": T0, "kind": "request", "messages": [{"role": "user", "content": "Pick the next issue."}]},
        {"ts": T0 + 1, "kind": "event", "message": "picked issue #1"},
    ]
    for role, entries in (("implementer", implementer), ("orchestrator", orchestrator)):
        (folder / f"{role}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


def fixture_store(home: Path, monkeypatch, extra_runs: int = 0) -> Path:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.setenv(var, "1790000000 +0000")
    store = Store(home / "atelier.db")
    main_id = "toy-20260921-133320-a1b2"
    run_dir = home / "runs" / main_id
    seed, accepted, rejected = workspace(run_dir, main_id)
    (run_dir / "memory.md").write_text("# Memory\n\n- cache=kv: 3x faster decoding\n- compile: no gain\n")
    transcripts(run_dir / "transcripts" / "round-1")
    store.add_run(run_row(main_id, run_dir, 0, best_commit=accepted))
    rounds = [
        (1, "cache=kv", "accepted", 0.3, "decode_s 0.3 vs 0.9 (3.000×, beyond the ±5.0% noise band)"),
        (2, "compile=True", "rejected", 0.31, "decode_s 0.31 vs 0.3 (0.968×, within the noise band)"),
        (3, "cache=none", "failed", None, "judge: prompt 0: tokens differ from the reference"),
    ]
    add_rounds(store, main_id, rounds, {1: seed, 2: accepted}, {1: accepted, 2: rejected})
    store.set_round(main_id, 2, gain=0.968, low=0.941, high=0.996, pairs=4)
    store.add_verdict(main_id, 2, "judge", True, [], ["prompt 0: same tokens", "prompt 1: same tokens"])
    for side, values in (("incumbent", (0.30, 0.29, 0.31, 0.30)), ("candidate", (0.31, 0.31, 0.30, 0.32))):
        for repeat, value in enumerate(values):
            store.add_metrics(main_id, 2, side, repeat, {"decode_s": value})
    for i, (kind, message) in enumerate([("baseline", "decode_s 0.9 (noise band ±5.0%)"), ("round", "task: cache=kv")]):
        store.db.execute("INSERT INTO events (run_id, round, ts, kind, message) VALUES (?,?,?,?,?)",
                         (main_id, None, T0 + i, kind, message))  # fmt: skip
    store.add_usage(main_id, 1, "implementer", calls=1, active_s=0.5)
    store.add_usage(main_id, 1, "evaluator", calls=4, active_s=12.0)
    other = "toy-20260921-143320-c3d4"
    store.add_run(run_row(other, home / "runs" / other, 1, best=0.45, status="interrupted"))
    other_rounds = [
        (1, "compile=True", "rejected", 0.88, "within the noise band"),
        (2, "cache=kv", "accepted", 0.45, "2.000× beyond the noise band"),
    ]
    add_rounds(store, other, other_rounds, {1: seed}, {})
    stale = "toy-20260921-153320-e5f6"
    store.add_run(run_row(stale, home / "runs" / stale, 2, status="failed", baseline=None, best=None))
    for i in range(extra_runs):
        rid = f"toy-20260920-{i:06d}-0000"
        store.add_run(run_row(rid, home / "runs" / rid, -i - 1, best=0.9 - i / 100))
    store.close()
    return home / "atelier.db"


CONFIG = """\
[llm]
base_url = "https://llm.example/v1"
model = "big-model"
api_key_env = "BIG_KEY"

[roles.judge]
model = "small-model"

[executors.gpu1]
host = "gpu1.example"

[executors.gpu2]
host = "gpu2.example"
"""


@pytest.fixture
def stable(tmp_path, monkeypatch) -> Path:
    (tmp_path / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("ATELIER_CONFIG", str(tmp_path / "config.toml"))
    return fixture_store(tmp_path / "home", monkeypatch)


def app_for(db: Path) -> AtelierApp:
    return AtelierApp(db, poll=3600)


async def settle(pilot) -> None:
    """Wait for the workers' first reads to land; no blinking cursor in the picture."""
    await pilot.pause(0.3)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.2)


def test_runs_screen(stable, snap_compare):
    assert snap_compare(app_for(stable), terminal_size=SIZE, run_before=settle)


async def open_run(pilot) -> None:
    await settle(pilot)
    await pilot.press("down", "down", "enter")
    await settle(pilot)


def test_run_screen(stable, snap_compare):
    assert snap_compare(app_for(stable), terminal_size=SIZE, run_before=open_run)


def test_runs_screen_at_80x24(stable, snap_compare):
    assert snap_compare(app_for(stable), terminal_size=NARROW, run_before=settle)


def test_run_screen_at_80x24(stable, snap_compare):
    assert snap_compare(app_for(stable), terminal_size=NARROW, run_before=open_run)


def test_round_detail_screen(stable, snap_compare):
    async def detail(pilot):
        await open_run(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)

    assert snap_compare(app_for(stable), terminal_size=NARROW, run_before=detail)


def test_diff_screen(stable, snap_compare):
    async def diff(pilot):
        await open_run(pilot)
        await pilot.press("down", "f")
        await settle(pilot)

    assert snap_compare(app_for(stable), terminal_size=SIZE, run_before=diff)


def test_transcripts_screen(stable, snap_compare):
    async def transcripts(pilot):
        await open_run(pilot)
        pilot.app.screen.query_one("#tabs").active = "tab-transcripts"
        await settle(pilot)

    assert snap_compare(app_for(stable), terminal_size=SIZE, run_before=transcripts)


def test_memory_screen(stable, snap_compare):
    async def memory(pilot):
        await open_run(pilot)
        pilot.app.screen.query_one("#tabs").active = "tab-memory"
        await settle(pilot)

    assert snap_compare(app_for(stable), terminal_size=SIZE, run_before=memory)


def test_launch_screen(stable, snap_compare):
    async def launch(pilot):
        await settle(pilot)
        await pilot.press("n")
        pilot.app.screen.query_one("#policy").value = "issues"
        await settle(pilot)

    assert snap_compare(app_for(stable), terminal_size=SIZE, run_before=launch)


def test_compare_screen(stable, snap_compare):
    async def compare(pilot):
        await settle(pilot)
        await pilot.press("down", "space", "down", "space", "c")
        await settle(pilot)

    assert snap_compare(app_for(stable), terminal_size=SIZE, run_before=compare)
