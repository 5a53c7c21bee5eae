import json
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 5
ISSUES = """CREATE TABLE IF NOT EXISTS issues (
    run_id TEXT, id INTEGER, title TEXT, detail TEXT, status TEXT, source TEXT, round INTEGER, history TEXT,
    PRIMARY KEY (run_id, id))"""
MIGRATIONS = {
    2: ["ALTER TABLE rounds ADD COLUMN gain REAL"],
    3: [ISSUES],
    4: ["ALTER TABLE rounds ADD COLUMN tree TEXT", "ALTER TABLE verdicts ADD COLUMN detail TEXT"],
    5: [
        "ALTER TABLE rounds ADD COLUMN low REAL",
        "ALTER TABLE rounds ADD COLUMN high REAL",
        "ALTER TABLE rounds ADD COLUMN pairs INTEGER",
        "ALTER TABLE runs ADD COLUMN headline REAL",
        "ALTER TABLE runs ADD COLUMN headline_low REAL",
        "ALTER TABLE runs ADD COLUMN headline_high REAL",
    ],
}  # version: statements reaching it

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, target TEXT, target_dir TEXT, executor TEXT, policy TEXT, status TEXT,
    metric TEXT, direction TEXT, baseline REAL, noise REAL, best REAL, best_commit TEXT,
    dir TEXT, branch TEXT, pid INTEGER, started REAL, updated REAL, options TEXT, manifest TEXT,
    headline REAL, headline_low REAL, headline_high REAL);
CREATE TABLE IF NOT EXISTS rounds (
    run_id TEXT, n INTEGER, task TEXT, proposal TEXT, status TEXT, start_commit TEXT, commit_sha TEXT,
    metric REAL, ratio REAL, gain REAL, reason TEXT, started REAL, ended REAL, tree TEXT,
    low REAL, high REAL, pairs INTEGER, PRIMARY KEY (run_id, n));
CREATE TABLE IF NOT EXISTS verdicts (
    run_id TEXT, round INTEGER, role TEXT, passed INTEGER, reasons TEXT, ts REAL, detail TEXT);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT, round INTEGER, side TEXT, repeat INTEGER, name TEXT, value REAL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, round INTEGER, ts REAL, kind TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS usage (
    run_id TEXT, round INTEGER, role TEXT, calls INTEGER, tokens_in INTEGER, tokens_out INTEGER,
    active_s REAL, cost REAL);
CREATE TABLE IF NOT EXISTS control (run_id TEXT PRIMARY KEY, wanted TEXT, ts REAL);
CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, ts REAL, text TEXT);
"""
ISSUE_STATUSES = ("open", "working", "done", "dropped")


def gain(value: float, reference: float, direction: str) -> float:
    """How many times better `value` is than `reference`, whichever direction the metric improves in."""
    if direction == "lower":
        return reference / value if value else float("inf")
    return value / reference if reference else float("inf")


class StoreError(Exception):
    pass


def home() -> Path:
    return Path(os.environ.get("ATELIER_HOME", Path.home() / ".atelier"))


@dataclass
class Run:
    id: str
    target: str
    target_dir: str
    executor: str
    policy: str
    status: str
    metric: str
    direction: str
    baseline: float | None
    noise: float | None
    best: float | None
    best_commit: str | None
    dir: str
    branch: str
    pid: int | None
    started: float
    updated: float
    options: str
    manifest: str
    headline: float | None = None
    headline_low: float | None = None
    headline_high: float | None = None

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def best_ratio(self) -> float | None:
        if not self.baseline or not self.best:
            return None
        return gain(self.best, self.baseline, self.direction)


@dataclass
class Round:
    run_id: str
    n: int
    task: str
    proposal: str
    status: str
    start_commit: str | None
    commit_sha: str | None
    metric: float | None
    ratio: float | None
    gain: float | None
    reason: str | None
    started: float
    ended: float | None
    tree: str | None = None
    low: float | None = None
    high: float | None = None
    pairs: int | None = None


@dataclass
class Issue:
    """A backlog item of the issues policy; history holds one line per round that worked on it."""

    run_id: str
    id: int
    title: str
    detail: str
    status: str
    source: str
    round: int | None
    history: str


class Store:
    def __init__(self, path: Path | None = None, timeout: float = 30):
        self.path = path or home() / "atelier.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA + ISSUES + ";")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: cannot open the store: {e}") from e
        self._check_version()

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        version = int(row["value"])
        if version < 1:
            raise StoreError(
                f"{self.path}: store schema version {version} is older than this Atelier can migrate (1 and up); "
                "move the file aside to start a new store"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {version}, this Atelier reads up to {SCHEMA_VERSION}; "
                "use the matching Atelier release or move the file aside"
            )
        with self.transaction():
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    if not self._has(statement):
                        self.db.execute(statement)
            self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def _has(self, statement: str) -> bool:
        """Whether an ALTER TABLE … ADD COLUMN is already done (a table the schema script just made has it)."""
        words = statement.split()
        if words[:2] != ["ALTER", "TABLE"] or "COLUMN" not in words:
            return False
        columns = [row["name"] for row in self.db.execute(f"PRAGMA table_info({words[2]})")]
        return words[words.index("COLUMN") + 1] in columns

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def add_run(self, run: Run) -> None:
        fields = list(Run.__dataclass_fields__)
        values = [getattr(run, f) for f in fields]
        self.db.execute(f"INSERT INTO runs ({','.join(fields)}) VALUES ({','.join('?' * len(fields))})", values)

    def update_run(self, run_id: str, **values) -> None:
        values["updated"] = time.time()
        sets = ", ".join(f"{k}=?" for k in values)
        self.db.execute(f"UPDATE runs SET {sets} WHERE id=?", [*values.values(), run_id])

    def run(self, run_id: str) -> Run:
        rows = self.db.execute("SELECT * FROM runs WHERE id=? OR id LIKE ?", (run_id, run_id + "%")).fetchall()
        if len(rows) != 1:
            raise StoreError(f"no run '{run_id}'" if not rows else f"'{run_id}' matches {len(rows)} runs")
        return Run(**rows[0])

    def runs(self) -> list[Run]:
        return [Run(**r) for r in self.db.execute("SELECT * FROM runs ORDER BY started DESC")]

    def start_round(self, run_id: str, n: int, task: str, proposal: dict, start_commit: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO rounds (run_id, n, task, proposal, status, start_commit, started) "
            "VALUES (?,?,?,?,?,?,?)",
            (run_id, n, task, json.dumps(proposal), "running", start_commit, time.time()),
        )

    def end_round(self, run_id: str, n: int, status: str, reason: str, **values) -> None:
        values |= {"status": status, "reason": reason, "ended": time.time()}
        sets = ", ".join(f"{k}=?" for k in values)
        self.db.execute(f"UPDATE rounds SET {sets} WHERE run_id=? AND n=?", [*values.values(), run_id, n])

    def set_round(self, run_id: str, n: int, **values) -> None:
        sets = ", ".join(f"{k}=?" for k in values)
        self.db.execute(f"UPDATE rounds SET {sets} WHERE run_id=? AND n=?", [*values.values(), run_id, n])

    def rounds(self, run_id: str) -> list[Round]:
        rows = self.db.execute("SELECT * FROM rounds WHERE run_id=? ORDER BY n", (run_id,))
        return [Round(**r) for r in rows]

    def add_verdict(
        self, run_id: str, n: int, role: str, passed: bool, reasons: list[str], detail: Sequence[str] = ()
    ) -> None:
        self.db.execute(
            "INSERT INTO verdicts (run_id, round, role, passed, reasons, ts, detail) VALUES (?,?,?,?,?,?,?)",
            (run_id, n, role, int(passed), json.dumps(reasons), time.time(), json.dumps(list(detail))),
        )

    def verdicts(self, run_id: str, n: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM verdicts WHERE run_id=? AND round=? ORDER BY ts", (run_id, n)).fetchall()

    def add_metrics(self, run_id: str, n: int, side: str, repeat: int, values: dict[str, float]) -> None:
        rows = [(run_id, n, side, repeat, k, v) for k, v in values.items()]
        self.db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?)", rows)

    def metrics(self, run_id: str, n: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM metrics WHERE run_id=? AND round=?", (run_id, n)).fetchall()

    def pairs(self, run_id: str, name: str) -> list[tuple[bool, list[tuple[float, float]]]]:
        """Each round's interleaved (incumbent, candidate) values of a metric, in the order measured, and whether
        the pair is one stack twice (the baseline's consecutive calls)."""
        rows = self.db.execute(
            "SELECT round, side, repeat, value FROM metrics WHERE run_id=? AND name=? ORDER BY round, rowid",
            (run_id, name),
        ).fetchall()
        found: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for a, b in zip(rows, rows[1:], strict=False):
            same = a["side"] == b["side"] == "baseline" and a["repeat"] % 2 == 0 and b["repeat"] == a["repeat"] + 1
            paired = a["round"] == b["round"] and a["repeat"] == b["repeat"] and "candidate" in (a["side"], b["side"])
            if same or (paired and a["side"] != b["side"]):
                first, second = (a, b) if same or b["side"] == "candidate" else (b, a)
                found.setdefault((a["round"], first["side"]), []).append((first["value"], second["value"]))
        return [(side == "baseline", pairs) for (_, side), pairs in found.items()]

    def event(self, run_id: str, n: int | None, kind: str, message: str) -> None:
        self.db.execute(
            "INSERT INTO events (run_id, round, ts, kind, message) VALUES (?,?,?,?,?)",
            (run_id, n, time.time(), kind, message),
        )

    def events(self, run_id: str, after: int = 0) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM events WHERE run_id=? AND id>? ORDER BY id", (run_id, after)).fetchall()

    def add_usage(self, run_id: str, n: int, role: str, calls=0, tokens_in=0, tokens_out=0, active_s=0.0, cost=0.0):
        self.db.execute(
            "INSERT INTO usage VALUES (?,?,?,?,?,?,?,?)",
            (run_id, n, role, calls, tokens_in, tokens_out, active_s, cost),
        )

    def usage(self, run_id: str) -> list[sqlite3.Row]:
        query = (
            "SELECT role, SUM(calls) calls, SUM(tokens_in) tokens_in, SUM(tokens_out) tokens_out, "
            "SUM(active_s) active_s, SUM(cost) cost FROM usage WHERE run_id=? GROUP BY role ORDER BY role"
        )
        return self.db.execute(query, (run_id,)).fetchall()

    def add_issue(self, run_id: str, title: str, detail: str, source: str, n: int | None) -> int:
        with self.transaction():
            row = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM issues WHERE run_id=?", (run_id,)).fetchone()
            self.db.execute(
                "INSERT INTO issues VALUES (?,?,?,?,?,?,?,?)", (run_id, row[0], title, detail, "open", source, n, "")
            )
        return row[0]

    def issues(self, run_id: str) -> list[Issue]:
        return [Issue(**r) for r in self.db.execute("SELECT * FROM issues WHERE run_id=? ORDER BY id", (run_id,))]

    def update_issue(self, run_id: str, issue_id: int, status: str, note: str = "") -> None:
        assert status in ISSUE_STATUSES
        self.db.execute(
            "UPDATE issues SET status=?, history=history || ? WHERE run_id=? AND id=?",
            (status, f"{note}\n" if note else "", run_id, issue_id),
        )

    def set_options(self, run_id: str, **values) -> dict:
        """Change some of a run's options (its budgets, mid-run) in its stored options JSON; the options after."""
        with self.transaction():
            row = self.db.execute("SELECT options FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no run '{run_id}'")
            options = json.loads(row["options"] or "{}") | values
            changed = (json.dumps(options), time.time(), run_id)
            self.db.execute("UPDATE runs SET options=?, updated=? WHERE id=?", changed)
        return options

    def set_issue(self, run_id: str, issue_id: int, status: str, note: str) -> None:
        """A user's change to a backlog item: parked (kept, not picked), open again, or dropped."""
        if status not in ("parked", "open", "dropped"):
            raise ValueError(f"an issue can be parked, opened or dropped, not {status!r}")
        found = self.db.execute(
            "UPDATE issues SET status=?, history=history || ? WHERE run_id=? AND id=?",
            (status, f"{note}\n", run_id, issue_id),
        )
        if not found.rowcount:
            raise StoreError(f"no issue #{issue_id} in run '{run_id}'")

    def last_event_id(self, run_id: str, kind: str) -> int:
        """The id of the run's latest event of this kind, 0 when there is none."""
        row = self.db.execute("SELECT MAX(id) FROM events WHERE run_id=? AND kind=?", (run_id, kind)).fetchone()
        return row[0] or 0
