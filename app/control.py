"""Steering a run from outside its process: pause, resume and stop requests the loop honours between roles and
rounds, notes for the next round, new budgets taken up at the next step, parking or dropping a backlog item, and
reverting a stopped run to an accepted round."""

import json
import shutil
import time

import git

from app.store import Store
from app.workspace import Workspace

POLL_S = 0.5


class Stopped(KeyboardInterrupt):
    """A stop request: handled like Ctrl-C, so the run ends `interrupted` and can be resumed."""


def request(store: Store, run_id: str, wanted: str) -> None:
    """wanted: pause | stop | "" (carry on)."""
    store.db.execute("INSERT OR REPLACE INTO control VALUES (?,?,?)", (run_id, wanted, time.time()))


def wanted(store: Store, run_id: str) -> str:
    row = store.db.execute("SELECT wanted FROM control WHERE run_id=?", (run_id,)).fetchone()
    return row["wanted"] if row else ""


def checkpoint(run, n: int | None = None) -> None:
    """Called by the loop between roles and rounds: take up new budgets, stop, or wait here while paused."""
    take_budgets(run, n)
    want = wanted(run.store, run.id)
    if want == "pause":
        run.update(status="paused")
        run.say(n, "pause", "paused from outside; waiting for resume")
        while (want := wanted(run.store, run.id)) == "pause":
            time.sleep(POLL_S)
        run.update(status="running")
        if want != "stop":
            run.say(n, "resume", "resumed")
    if want == "stop":
        request(run.store, run.id, "")
        run.say(n, "stop", "stop requested")
        raise Stopped


def set_budgets(store: Store, run_id: str, values: dict[str, int | float]) -> str:
    """New budgets for a run (checked by app/budgets.py); a live run takes them up at its next step."""
    from app import budgets

    changed = {k: budgets.parse(k, str(v)) for k, v in values.items()}
    store.set_options(run_id, **changed)
    said = ", ".join(f"{budgets.BY_KEY[k].label} {v:g}" for k, v in changed.items())
    store.event(run_id, None, "budgets", f"budgets set: {said}")
    return said


def take_budgets(run, n: int | None = None) -> None:
    """After a `budgets` event (set_budgets, from outside), the stored budgets that differ from the run's."""
    from app.budgets import BUDGETS

    last = run.store.last_event_id(run.id, "budgets")
    if last <= run.__dict__.get("budgets_seen", 0):
        return
    run.__dict__["budgets_seen"] = last
    stored = json.loads(run.store.run(run.id).options or "{}")
    for b in BUDGETS:
        if b.key in stored and stored[b.key] != getattr(run.options, b.key):
            run.say(n, "budgets", f"{b.label}: {getattr(run.options, b.key):g} → {stored[b.key]:g}")
            setattr(run.options, b.key, stored[b.key])


def park(store: Store, run_id: str, issue_id: int) -> str:
    """Keep a backlog item out of the Orchestrator's picks until it is opened again."""
    store.set_issue(run_id, issue_id, "parked", "parked by the user")
    store.event(run_id, None, "backlog", f"issue #{issue_id} parked")
    return f"issue #{issue_id} parked: the Orchestrator will not pick it (o opens it again)"


def reopen_issue(store: Store, run_id: str, issue_id: int) -> str:
    store.set_issue(run_id, issue_id, "open", "opened again by the user")
    store.event(run_id, None, "backlog", f"issue #{issue_id} open again")
    return f"issue #{issue_id} is open again"


def drop(store: Store, run_id: str, issue_id: int) -> str:
    store.set_issue(run_id, issue_id, "dropped", "dropped by the user")
    store.event(run_id, None, "backlog", f"issue #{issue_id} dropped")
    return f"issue #{issue_id} dropped"


def add_note(store: Store, run_id: str, text: str) -> None:
    store.db.execute("INSERT INTO notes (run_id, ts, text) VALUES (?,?,?)", (run_id, time.time(), text))
    store.event(run_id, None, "note", text)


def notes(store: Store, run_id: str) -> list[str]:
    return [r["text"] for r in store.db.execute("SELECT text FROM notes WHERE run_id=? ORDER BY id", (run_id,))]


def revert(store: Store, run_id: str, n: int) -> str:
    """Put a stopped run back at accepted round n; later accepted rounds become `reverted` (kept under a ref)."""
    run = store.run(run_id)
    rounds = {r.n: r for r in store.rounds(run.id)}
    target = rounds.get(n)
    if target is None or target.status != "accepted" or not target.commit_sha:
        raise ValueError(f"round {n} of {run.id} is not an accepted round")
    workspace = Workspace(run.path / "workspace", run.branch)
    with store.transaction():
        for r in rounds.values():
            if r.n > n and r.status == "accepted" and r.commit_sha:
                git.Reference.create(workspace.repo, f"refs/atelier/reverted/{r.n}", r.commit_sha, force=True)
                reason = f"reverted to round {n}; was: {r.reason}"
                store.db.execute(
                    "UPDATE rounds SET status='reverted', reason=? WHERE run_id=? AND n=?", (reason, run.id, r.n)
                )
        store.update_run(run.id, best=target.metric, best_commit=target.commit_sha)
    workspace.reset(target.commit_sha)
    store.event(run.id, None, "revert", f"reverted to round {n} ({target.commit_sha[:12]})")
    return target.commit_sha


def delete(store: Store, run_id: str) -> str:
    """Forget a run that is not going: its rows, then its folder."""
    run = store.run(run_id)
    with store.transaction():
        for table in ("rounds", "verdicts", "metrics", "events", "usage", "control", "notes", "issues"):
            store.db.execute(f"DELETE FROM {table} WHERE run_id=?", (run.id,))
        store.db.execute("DELETE FROM runs WHERE id=?", (run.id,))
    if run.path.parent.name == "runs" and (run.path / "workspace").is_dir():
        shutil.rmtree(run.path, ignore_errors=True)
    return run.id
