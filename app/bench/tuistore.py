"""A store like a busy user's for the TUI bench: many finished runs with rounds, events, usage and backlogs, one
live run with a real git workspace, and the writer that plays that run's loop at a steady rate from its own process."""

import json
import os
import sys
import time
from pathlib import Path

from app.store import Run, Store
from app.workspace import Workspace

ROLES = ("orchestrator", "implementer", "judge", "evaluator")
ROUNDS = 12
EVENTS_PER_ROUND = 8
STATUSES = ("accepted", "rejected", "rejected", "failed")
SEED = 'BATCH = 1\nCACHE = "none"\n\n\ndef step(tokens):\n    return [t + 1 for t in tokens]\n'


def build(home: Path, runs: int) -> tuple[Path, str]:
    """`runs` runs in home/atelier.db; the first is the live one the writer plays. Returns the store and its id."""
    store = Store(home / "atelier.db")
    t0 = time.time() - runs * 3600
    ids = [f"bench-{i:03d}" for i in range(runs)]
    for i, run_id in enumerate(ids):
        live = i == 0
        run_dir = home / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "memory.md").write_text("# Memory\n\n" + "".join(f"- round {n}: tried a knob\n" for n in range(9)))
        commits = workspace(run_dir, run_id) if live else {}
        store.add_run(run_row(run_id, run_dir, t0 + i * 3600, live))
        with store.transaction():
            for n in range(1, ROUNDS + 1):
                play_round(store, run_id, n, commits)
            for k, role in enumerate(ROLES):
                store.add_usage(run_id, 1, role, calls=3 + k, tokens_in=9000, tokens_out=700, active_s=4.0 + k)
        for k in range(3):
            store.add_issue(run_id, f"idea {k}", "try it", "orchestrator", 1)
    store.close()
    return home / "atelier.db", ids[0]


def run_row(run_id: str, run_dir: Path, started: float, live: bool) -> Run:
    return Run(id=run_id, target="toy", target_dir=str(run_dir), executor="mlx", policy="issues",
               status="running" if live else "done", metric="decode_s", direction="lower", baseline=0.9, noise=0.04,
               best=0.3, best_commit=None, dir=str(run_dir), branch=f"atelier/{run_id}", pid=None, started=started,
               updated=started, options=json.dumps({"policy": "issues"}), manifest="{}")  # fmt: skip


def workspace(run_dir: Path, run_id: str) -> dict[int, tuple[str, str]]:
    """A real git workspace whose accepted rounds have real diffs: round n -> (start commit, commit)."""
    seed = run_dir / "seed"
    seed.mkdir()
    (seed / "stack.py").write_text(SEED)
    ws = Workspace.create(run_dir / "workspace", seed, f"atelier/{run_id}")
    commits = {}
    for n in range(1, ROUNDS + 1):
        start = ws.head
        (ws.path / "stack.py").write_text(SEED.replace("BATCH = 1", f"BATCH = {n + 1}"))
        commits[n] = (start, ws.commit(f"round {n}: BATCH={n + 1}"))
    return commits


def play_round(store: Store, run_id: str, n: int, commits: dict, events: int = EVENTS_PER_ROUND) -> None:
    start, commit = commits.get(n, ("0" * 40, None))
    store.start_round(run_id, n, f"BATCH={n + 1}", {"changes": {"BATCH": n + 1}}, start)
    for k in range(events):
        store.event(run_id, n, ("round", "implement", "judge", "evaluate")[k % 4], f"round {n} step {k}: working")
    status = STATUSES[n % len(STATUSES)]
    metric = None if status == "failed" else 0.9 / (1 + n / 10)
    store.end_round(run_id, n, status, f"decode_s {metric} vs baseline 0.9", metric=metric,
                    ratio=metric and 0.9 / metric, commit_sha=commit if status == "accepted" else None)  # fmt: skip


def write(db: Path, run_id: str, rate: float, round_s: float, seconds: float) -> None:
    """Play the live run's loop: `rate` events a second, a round ending every `round_s` with its usage and memory."""
    store = Store(db)
    store.update_run(run_id, pid=os.getpid(), status="running")
    first = n = ROUNDS + 1
    started, sent = time.monotonic(), 0
    store.start_round(run_id, n, f"BATCH={n + 1}", {"changes": {"BATCH": n + 1}}, "0" * 40)
    while (elapsed := time.monotonic() - started) < seconds:
        if elapsed >= (n - first + 1) * round_s:
            store.end_round(run_id, n, STATUSES[n % 4], "measured", metric=0.31, ratio=0.9 / 0.31)
            store.add_usage(run_id, n, "implementer", calls=1, tokens_in=1000, tokens_out=100, active_s=1.0)
            with (store.path.parent / "runs" / run_id / "memory.md").open("a") as memory:
                memory.write(f"- round {n}: measured 0.31\n")
            n += 1
            store.start_round(run_id, n, f"BATCH={n + 1}", {"changes": {"BATCH": n + 1}}, "0" * 40)
        store.event(run_id, n, "evaluate", f"round {n}: repeat {sent}, decode_s {0.3 + sent % 7 / 100:.2f}")
        sent += 1
        time.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
    store.update_run(run_id, status="done")
    store.close()


if __name__ == "__main__":
    write(Path(sys.argv[1]), sys.argv[2], *map(float, sys.argv[3:6]))
