"""The inner loop's LLM roles: an Implementer, the Judge's review after the deterministic checks, and the
Evaluator's reading of the measurement. Each runs one fresh Session and turns its submit into the loop's types."""

import shlex
from pathlib import Path

from app.agents import memory
from app.agents.config import Config
from app.agents.prompts import SYSTEM, context
from app.agents.session import Session
from app.agents.tools import cut
from app.roles import Attempt, Change, Measurement, RoleError, Task, Verdict
from app.run import ActiveRun, hardware_facts
from app.workspace import Workspace

MAX_DIFF = 40_000


def file_issues(run: ActiveRun, n: int, source: str, submitted: dict) -> list[int]:
    return [run.store.add_issue(run.id, i["title"], i["detail"], source, n) for i in submitted.get("new_issues", [])]


def commands(run: ActiveRun, stack: Path) -> str:
    """The checker and benchmark command lines, for the agent to run itself."""
    t = run.target
    checker = run.command(t.checker.command, stack, run.dir / "readonly" / t.checker.inputs)
    bench = run.command(t.benchmark.command, stack, run.dir / "readonly" / t.benchmark.inputs)
    return f"checker (must print CHECK PASS): {shlex.join(checker)}\nbenchmark: {shlex.join(bench)}"


class Bound:
    """An Implementer told which run and round its next implement() belongs to."""

    run: ActiveRun | None = None
    n = 0

    def bind(self, run: ActiveRun, n: int) -> None:
        self.run, self.n = run, n

    def bound(self) -> ActiveRun:
        if self.run is None:
            raise RoleError("implementer: not bound to a run")
        return self.run


class LLMImplementer(Bound):
    def __init__(self, config: Config):
        self.config = config

    def implement(self, task: Task, workspace: Workspace, feedback: list[Attempt]) -> Change:
        run = self.bound()
        earlier = "\n".join(f"- attempt {i}: {a.error}" for i, a in enumerate(feedback, 1))
        user = context(
            ("Task", f"{task.title}\n\n{task.detail}".strip()),
            ("Objective of the target", run.target.objective),
            ("Memory", memory.read(run)),
            ("Earlier attempts this round", earlier),
            ("Commands", commands(run, workspace.path)),
        )
        submitted = Session(run, self.n, "implementer", self.config, workspace.path).submit(SYSTEM["implementer"], user)
        file_issues(run, self.n, "implementer", submitted)
        return Change(submitted["summary"], submitted["files_changed"], submitted["claims"])


class LLMJudge:
    """Reviews a candidate that passed the deterministic checks; it can reject, never rescue."""

    def __init__(self, config: Config):
        self.config = config

    def review(self, run: ActiveRun, n: int, change: Change, diff: str) -> Verdict:
        root = run.workspace.path
        user = context(
            ("The Implementer's summary", change.summary),
            ("Its claims", "\n".join(f"- {c}" for c in change.claims)),
            ("Diff of this round (git diff start..workspace)", cut(diff, MAX_DIFF)),
        )
        session = Session(run, n, "judge", self.config, root, check=lambda s: _uncited(root, s))
        submitted = session.submit(SYSTEM["judge"], user)
        file_issues(run, n, "judge", submitted)
        findings = [f"{f['file']}:{f['line']}: {f['evidence']}" for f in submitted["reward_hacking_findings"]]
        failed = [f"failed check: {c}" for c in submitted["failed_checks"]]
        passed = submitted["verdict"] == "pass"
        reasons = [f"LLM review: {'pass' if passed else 'reward hacking'}", *findings, *failed]
        return Verdict(passed, reasons, findings)


def _uncited(root: Path, submitted: dict) -> str | None:
    """A finding whose file and line are not in the workspace."""
    for f in submitted["reward_hacking_findings"]:
        file = (root / f["file"]).resolve()
        if not file.is_relative_to(root.resolve()) or not file.is_file():
            return f"finding cites {f['file']}, which is not a file of the workspace"
        lines = len(file.read_text(errors="replace").splitlines())
        if f["line"] > lines:
            return f"finding cites {f['file']}:{f['line']}, but that file has {lines} lines"
    return None


def hardware(run: ActiveRun) -> str:
    return "\n".join(f"{k}: {v}" for k, v in hardware_facts(run.dir).items())


class LLMEvaluator:
    """Reads a finished measurement: bottleneck and hints for the record; the numbers and acceptance stay."""

    def __init__(self, config: Config):
        self.config = config

    def advise(self, run: ActiveRun, n: int, measurement: Measurement, diff: str) -> list[str]:
        m = measurement
        numbers = f"{m.summary}\ncandidate repeats: {m.candidate}\nincumbent repeats: {m.incumbent}\nother: {m.extra}"
        user = context(
            ("Measurement", numbers),
            ("Hardware where the benchmark ran", hardware(run)),
            ("Diff of this round", cut(diff, MAX_DIFF)),
        )
        submitted = Session(run, n, "evaluator", self.config, run.workspace.path).submit(SYSTEM["evaluator"], user)
        file_issues(run, n, "evaluator", submitted)
        return [f"bottleneck ({submitted['metric']}): {submitted['bottleneck']}", *submitted["hints"]]
