"""The outer loop: baseline once, then one task per round from the policy until a limit, a plateau or the end."""

import json
import time

from app import control, readonly
from app.evaluator import MIN_NOISE, BenchmarkError, baseline
from app.inner import play
from app.judge import judge
from app.policies import Outcome, Policy
from app.roles import BudgetSpent, RoleError, Task
from app.run import ActiveRun
from app.store import Round


class RunError(Exception):
    pass


def synthesize(run: ActiveRun, policy: Policy) -> str:
    """Runs rounds until the policy or a limit stops; returns why it stopped."""
    control.request(run.store, run.id, "")  # a request left from an earlier process is stale
    if run.record.baseline is None:
        establish_baseline(run)
    run.update(status="running")
    while (reason := limit_reached(run) or policy.stop(run)) is None:
        control.checkpoint(run)
        try:
            picked = policy.next(run)
        except BudgetSpent as e:
            reason = str(e)
            break
        except RoleError as e:
            raise RunError(f"the {policy.name} policy could not pick the next task: {e}") from e
        if picked is None:
            reason = "converged: the policy has nothing left to try from the best stack"
            break
        task, start = picked
        n = next_round(run)
        run.workspace.reset(start)
        run.store.start_round(run.id, n, task.title, task.proposal, start)
        run.say(n, "round", f"task: {task.title}")
        outcome = play(run, n, task, policy.implementer, policy.reviewer, policy.advisor, against=start)
        finish(run, n, task, start, outcome)
        policy.record(run, n, task, outcome)
    run.update(status="done")
    run.say(None, "stop", reason)
    return reason


def next_round(run: ActiveRun) -> int:
    return len(run.store.rounds(run.id)) + 1


def establish_baseline(run: ActiveRun) -> None:
    seed = run.snapshot(run.workspace.head).path
    run.say(None, "baseline", "checking the seed stack")
    verdict = judge(run, None, seed)
    if not verdict.passed:
        raise RunError("the seed stack fails its own checker: " + "; ".join(verdict.reasons))
    frozen = readonly.manifest(run.dir)
    run.update(manifest=json.dumps(frozen))
    try:
        value, noise = baseline(run, seed)
    except BenchmarkError as e:
        raise RunError(str(e)) from e
    run.update(baseline=value, noise=noise, best=value)
    run.say(None, "baseline", f"{run.record.metric} {value:.4g} (noise band ±{noise:.1%})")


def finish(run: ActiveRun, n: int, task: Task, start: str, outcome: Outcome) -> None:
    m = outcome.measurement
    values = {}
    if m and run.record.baseline:
        ratio = run.target.benchmark.gain(m.candidate_median, run.record.baseline)
        values = {"metric": m.candidate_median, "ratio": ratio, "gain": m.gain}
    if outcome.status == "accepted":
        assert m is not None and outcome.tree is not None
        committed = run.workspace.commit_tree(outcome.tree, f"round {n}: {task.title}\n\n{outcome.reason}")
        accepted = run.workspace.keep("accepted", n, committed)
        best = start == run.record.best_commit or beats_best(run, m.candidate_median)
        if not best:
            outcome.reason += f"; not beyond the best {run.record.best:.4g}, which stays"
        with run.store.transaction():
            run.store.end_round(run.id, n, "accepted", outcome.reason, commit_sha=accepted, **values)
            if best:
                run.store.update_run(run.id, best=m.candidate_median, best_commit=accepted)
        run.refresh()
    else:
        message = f"round {n} ({outcome.status}): {task.title}\n\n{outcome.reason}"
        kept = run.workspace.reject(n, message, start, outcome.tree)
        run.store.end_round(run.id, n, outcome.status, outcome.reason, commit_sha=kept, **values)
    if run.record.best_commit and run.workspace.head != run.record.best_commit:
        run.workspace.reset(run.record.best_commit)
    run.say(n, outcome.status, outcome.reason)


def beats_best(run: ActiveRun, value: float) -> bool:
    """A candidate measured against a stack other than the best moves the best only beyond the noise band."""
    assert run.record.best is not None
    return run.target.benchmark.gain(value, run.record.best) > 1 + (run.record.noise or MIN_NOISE)


def limit_reached(run: ActiveRun) -> str | None:
    rounds = [r for r in run.store.rounds(run.id) if r.status != "interrupted"]
    o = run.options
    if len(rounds) >= o.max_rounds:
        return f"max rounds: {o.max_rounds} rounds played"
    spent = spent_s(rounds)
    if spent >= o.max_minutes * 60:
        return f"max wall time: {spent / 60:.1f} of {o.max_minutes:g} minutes spent in rounds"
    tail = [r.status for r in rounds[-o.plateau :]]
    if len(tail) == o.plateau and "accepted" not in tail:
        return f"plateau: no significant gain in the last {o.plateau} rounds"
    return None


def spent_s(rounds: list[Round]) -> float:
    """Seconds spent in rounds, the one being played included; interrupted rounds do not count."""
    now = time.time()
    return sum((r.ended or now) - r.started for r in rounds if r.status != "interrupted")
