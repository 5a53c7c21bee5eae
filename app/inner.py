"""One round of the inner loop: Implementer → Accuracy Judge → Performance Evaluator, with a retry budget."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app import control, knobs
from app.evaluator import BenchmarkError, WrongOutput, evaluate
from app.judge import judge, untouched
from app.policies import Outcome
from app.roles import Advisor, Attempt, Change, Implementer, Measurement, Reviewer, RoleError, Task, Verdict
from app.run import ActiveRun
from app.workspace import Snapshot, SnapshotError


def play(
    run: ActiveRun, n: int, task: Task, implementer: Implementer, reviewer: Reviewer | None = None,
    advisor: Advisor | None = None, against: str | None = None,
) -> Outcome:  # fmt: skip
    """`against`: the commit the candidate is benchmarked against side by side, the best stack unless given."""
    attempts: list[Attempt] = []
    for attempt in range(1, run.options.attempts + 1):
        run.progress.role(n, "implementer", f"attempt {attempt}: {task.title}")
        outcome = _attempt(run, n, task, implementer, attempts, reviewer, advisor, against)
        if outcome is not None:
            return outcome
    return Outcome("failed", attempts[-1].error if attempts else "no attempt made")


def _attempt(
    run: ActiveRun, n: int, task: Task, implementer: Implementer, attempts: list[Attempt], reviewer: Reviewer | None,
    advisor: Advisor | None, against: str | None,
):  # fmt: skip
    try:
        with timed(run, n, "implementer"):
            change = implementer.implement(task, run.workspace, attempts)
        knobs.read(run.workspace.path)
        snapshot = run.freeze()
    except (RoleError, knobs.KnobError, SnapshotError) as e:
        attempts.append(Attempt(error=f"implementer: {e}"))
        run.say(n, "implement", f"failed: {e}")
        return None
    if snapshot.tree == run.workspace.tree_of(run.workspace.head):
        attempts.append(Attempt(change, error="implementer: the workspace is unchanged"))
        return None
    run.store.set_round(run.id, n, tree=snapshot.tree)
    run.say(n, "implement", change.summary)
    control.checkpoint(run, n)
    with timed(run, n, "judge"):
        verdict = judge(run, n, snapshot.path)
    run.store.add_verdict(run.id, n, "judge", verdict.passed, verdict.reasons, verdict.detail)
    if verdict.passed and reviewer:
        verdict = _review(run, n, reviewer, change, snapshot.tree)
        run.store.add_verdict(run.id, n, "judge", verdict.passed, verdict.reasons)
    if not verdict.passed:
        return _failed(run, n, attempts, Attempt(change, verdict, "judge: " + "; ".join(verdict.reasons)), snapshot)
    run.say(n, "judge", "pass")
    control.checkpoint(run, n)
    try:
        with timed(run, n, "evaluator"):
            measurement = evaluate(run, n, snapshot.path, incumbent(run, against))
    except WrongOutput as e:
        run.store.add_verdict(run.id, n, "judge", False, [str(e)])
        return _failed(run, n, attempts, Attempt(change, verdict, f"judge: {e}"), snapshot)
    except BenchmarkError as e:
        attempts.append(Attempt(change, verdict, f"evaluator: {e}"))
        run.say(n, "evaluate", f"failed: {e}")
        return None
    tampered = untouched(run, "after the benchmark")
    if tampered:
        run.store.add_verdict(run.id, n, "judge", False, tampered)
        run.say(n, "judge", "FAIL " + "; ".join(tampered))
        return Outcome("failed", "judge: " + "; ".join(tampered), change, tree=snapshot.tree)
    if advisor:
        measurement.hints += _advise(run, n, advisor, measurement, snapshot.tree)
    run.store.add_verdict(run.id, n, "evaluator", measurement.accepted, [measurement.summary, *measurement.hints])
    status = "accepted" if measurement.accepted else "rejected"
    return Outcome(status, measurement.summary, change, measurement, tree=snapshot.tree)


def _failed(run: ActiveRun, n: int, attempts: list[Attempt], attempt: Attempt, snapshot: Snapshot) -> Outcome | None:
    attempts.append(attempt)
    run.say(n, "judge", "FAIL " + attempt.error.removeprefix("judge: "))
    if len(attempts) >= run.options.attempts:
        return Outcome("failed", attempt.error, attempt.change, tree=snapshot.tree)
    return None


def _review(run: ActiveRun, n: int, reviewer: Reviewer, change: Change, tree: str) -> Verdict:
    run.progress.role(n, "judge", "LLM review of the diff")
    try:
        with timed(run, n, "judge"):
            return reviewer.review(run, n, change, run.workspace.diff(tree))
    except RoleError as e:
        return Verdict(False, [f"LLM review failed: {e}"])


def _advise(run: ActiveRun, n: int, advisor: Advisor, measurement: Measurement, tree: str) -> list[str]:
    run.progress.role(n, "evaluator", "LLM reading of the measurement")
    try:
        with timed(run, n, "evaluator"):
            advice = advisor.advise(run, n, measurement, run.workspace.diff(tree))
    except RoleError as e:
        advice = [f"LLM evaluator failed: {e}"]
    run.say(n, "evaluate", "; ".join(advice))
    return advice


@contextmanager
def timed(run: ActiveRun, n: int, role: str) -> Iterator[None]:
    """Active time per role; LLM roles add their calls, tokens and cost on top."""
    start = time.monotonic()
    try:
        yield
    finally:
        run.store.add_usage(run.id, n, role, active_s=time.monotonic() - start)


def incumbent(run: ActiveRun, commit: str | None = None) -> Path:
    """A stack (the best one unless given) as its read-only snapshot, for side-by-side benchmarks."""
    commit = commit or run.record.best_commit
    assert commit is not None
    return run.snapshot(commit).path
