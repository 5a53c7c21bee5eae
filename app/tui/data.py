"""What the TUI reads from the store and the run folders. Called from worker threads, never the UI thread. git and
the run machinery are imported on first use, off the path of the TUI's startup."""

import json
import os
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.store import Issue, Round, Run, Store, StoreError, gain, home
from app.target import ROOT

LIVE = ("starting", "running", "paused")


@dataclass
class RunRow:
    run: Run
    status: str
    rounds: int
    cost: float

    @property
    def id(self) -> str:
        return self.run.id


@dataclass
class RunDetail:
    row: RunRow
    rounds: list[Round]
    usage: list[dict]
    memory: str
    notes: list[str]
    wanted: str
    events: list[sqlite3.Row] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    samples: str = ""


class Reader:
    """One store connection shared by the TUI's workers, used under a lock."""

    def __init__(self, path: Path | None = None, timeout: float = 2.0):
        self.path = path or home() / "atelier.db"
        self.timeout = timeout
        self.store: Store | None = None
        self.lock = threading.Lock()

    def open(self) -> Store:
        """The store, opened on first use; StoreError with a readable message when it cannot be read."""
        if self.store is None:
            if not self.path.exists():
                raise StoreError(f"no store at {self.path} yet: launch a run with n, or `atelier run TARGET`")
            try:
                self.store = Store(self.path, timeout=self.timeout)
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: cannot open the store: {e}") from e
        return self.store

    def call(self, fn, *args):
        with self.lock:
            try:
                return fn(self.open(), *args)
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    def runs(self) -> list[RunRow]:
        return self.call(_runs)

    def detail(self, run_id: str, after: int = 0) -> RunDetail:
        return self.call(_detail, run_id, after)


def _runs(store: Store) -> list[RunRow]:
    query = (
        "SELECT r.id, (SELECT COUNT(*) FROM rounds WHERE run_id=r.id) n, "
        "(SELECT COALESCE(SUM(cost), 0) FROM usage WHERE run_id=r.id) cost FROM runs r"
    )
    extra = {row["id"]: (row["n"], row["cost"]) for row in store.db.execute(query)}
    return [RunRow(run, status(run), *extra[run.id]) for run in store.runs()]


def _detail(store: Store, run_id: str, after: int) -> RunDetail:
    from app import control

    run = store.run(run_id)
    rounds = store.rounds(run.id)
    row = RunRow(run, status(run), len(rounds), sum(u["cost"] or 0 for u in store.usage(run.id)))
    memory = run.path / "memory.md"
    return RunDetail(
        row=row,
        rounds=rounds,
        usage=[dict(u) for u in store.usage(run.id)],
        memory=_read(memory) if memory.exists() else "(no memory.md)",
        notes=control.notes(store, run.id),
        wanted=control.wanted(store, run.id),
        events=store.events(run.id, after),
        issues=store.issues(run.id),
        samples=measuring(store, run, rounds) if row.status in LIVE else "",
    )


def measuring(store: Store, run: Run, rounds: list[Round]) -> str:
    """How far the step being measured is: the baseline's samples, or the running round's."""
    if run.baseline is None:
        n, what = 0, "baseline"
    elif rounds and rounds[-1].status == "running":
        n, what = rounds[-1].n, f"round {rounds[-1].n}"
    else:
        return ""
    found = {(m["side"], m["repeat"]) for m in store.metrics(run.id, n)}
    return f"{what}: {len(found)} benchmark calls measured" if found else ""


def status(run: Run) -> str:
    """The stored status, except that a live status whose process is gone reads `interrupted`."""
    from app.run import alive

    if run.status in LIVE and not alive(run.pid):
        return "interrupted"
    return run.status


def ratio_to_previous(rounds: list[Round], direction: str, baseline: float | None) -> dict[int, float]:
    """Each measured round's metric as a gain over the best accepted before it."""
    best, out = baseline, {}
    for r in rounds:
        if r.metric is not None and best:
            out[r.n] = gain(r.metric, best, direction)
        if r.status == "accepted" and r.metric is not None:
            best = r.metric
    return out


def diff(run: Run, r: Round) -> str:
    """The round's change: its commit (accepted) or refs/atelier/rejected/<n>, against its start commit."""
    import git

    try:
        return change(run, r) or ""
    except (git.GitError, OSError, ValueError) as e:
        return f"(cannot read the diff: {e})"


def change(run: Run, r: Round, *options: str) -> str | None:
    """`git diff [options]` of the round's commit against its start commit; None when the round recorded none."""
    import git

    repo = git.Repo(run.path / "workspace")
    commit = r.commit_sha or _ref(repo, f"refs/atelier/rejected/{r.n}")
    if not commit or not r.start_commit:
        return None
    return repo.git.diff(*options, r.start_commit, commit)


def _ref(repo, name: str) -> str | None:
    import git

    try:
        return repo.commit(name).hexsha
    except (git.BadName, ValueError):
        return None


def settings_at(run: Run, commit: str | None) -> dict:
    """Knob defaults in the stack at `commit`: what the best stack is set to."""
    if not commit:
        return {}
    import tomllib

    import git

    try:
        text = git.Repo(run.path / "workspace").git.show(f"{commit}:atelier.knobs.toml")
        return {k: v.get("default") for k, v in tomllib.loads(text).items() if isinstance(v, dict)}
    except (git.GitError, OSError, ValueError):
        return {}


def launch(
    target: str, policy: str, limits: dict[str, str], executor: str = "", settings: dict | None = None
) -> tuple[int, Path]:
    """`python -m app run TARGET …` in its own session, so it outlives the TUI; output goes to a log file. With
    settings, the run reads them as its config (ATELIER_CONFIG), a file kept beside the log for resuming."""
    logs = home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"launch-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    args = [sys.executable, "-m", "app", "run", target, "--policy", policy]
    if executor:
        args += ["--executor", executor]
    for key, value in limits.items():
        if value:
            args += [f"--{key.replace('_', '-')}", value]
    env = dict(os.environ)
    if settings is not None:
        env["ATELIER_CONFIG"] = str(_write_config(log.with_suffix(".config.toml"), settings))
    return _spawn(args, log, env), log


def _write_config(path: Path, settings: dict) -> Path:
    import tomlkit

    path.touch(mode=0o600)
    path.write_text(tomlkit.dumps(settings))
    return path


def launched_with(run_id: str) -> Path | None:
    """The per-launch config a run was started with from the TUI: the one beside the log that names the run."""
    for log in sorted((home() / "logs").glob("launch-*.log"), reverse=True):
        conf = log.with_suffix(".config.toml")
        if conf.exists() and f"run {run_id} in " in log.read_text(errors="replace")[:20000]:
            return conf
    return None


def resume(run_id: str) -> tuple[int, Path]:
    logs = home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"resume-{run_id}-{int(time.time())}.log"
    env = dict(os.environ)
    if conf := launched_with(run_id):
        env["ATELIER_CONFIG"] = str(conf)
    return _spawn([sys.executable, "-m", "app", "resume", run_id], log, env), log


EXITED: dict[int, int] = {}  # pid: exit code, of the processes this TUI started that have ended


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> int:
    """Start the process; a thread waits for it, so it never lingers as a zombie and its exit code is known."""
    import subprocess

    with log.open("w") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    threading.Thread(target=lambda: EXITED.__setitem__(proc.pid, proc.wait()), daemon=True).start()
    return proc.pid


def failed_start(pid: int, log: Path, wait_s: float = 30.0) -> str:
    """The error of a launched process that ended with a failure within wait_s (its log's last lines), else ""."""
    deadline = time.monotonic() + wait_s
    while pid not in EXITED and time.monotonic() < deadline:
        time.sleep(0.1)
    if not EXITED.get(pid):
        return ""
    try:
        tail = [t for t in log.read_text(errors="replace").splitlines() if t.strip()][-3:]
    except OSError:
        tail = []
    return f"exit code {EXITED[pid]}: " + (" / ".join(tail) or "no output") + f" (log: {log})"


def options(run: Run) -> dict:
    try:
        return json.loads(run.options)
    except ValueError:
        return {}


def _read(path: Path) -> str:
    """A text file as written: a carriage return stays one (shown as \\x0d), not a line break."""
    with path.open(newline="", errors="replace") as f:
        return f.read()
