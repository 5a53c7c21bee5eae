"""The outer loop: baseline once, then one task per round from the policy until a limit, a plateau or the end,
then the best stack confirmed against the seed."""

import json
import time

from app import control, readonly
from app.acceptance import Rule
from app.evaluator import BenchmarkError, baseline, evaluate
from app.inner import incumbent, play
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
    confirm(run)
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
    spread = noise.spread(Rule().window)
    run.update(baseline=value, noise=spread, best=value)
    measured = f"noise ±{spread:.1%} a pair" if spread is not None else "noise not measured yet"
    run.say(None, "baseline", f"{run.record.metric} {value:.4g} ({measured})")


def finish(run: ActiveRun, n: int, task: Task, start: str, outcome: Outcome) -> None:
    m = outcome.measurement
    values: dict[str, float | int | None] = {}
    if m and run.record.baseline:
        ratio = run.target.benchmark.gain(m.candidate_median, run.record.baseline)
        values = {"metric": m.candidate_median, "ratio": ratio, "gain": m.gain}
        values |= {"low": m.low, "high": _finite(m.high), "pairs": m.pairs}
    if m:
        run.update(noise=m.noise)
    if outcome.status == "accepted":
        assert m is not None and outcome.tree is not None
        committed = run.workspace.commit_tree(outcome.tree, f"round {n}: {task.title}\n\n{outcome.reason}")
        accepted = run.workspace.keep("accepted", n, committed)
        best = start == run.record.best_commit or beats_best(run, n, accepted)
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


def beats_best(run: ActiveRun, n: int, accepted: str) -> bool:
    """A candidate accepted against a stack other than the best moves the best only when the acceptance test
    also accepts it against the best, measured now side by side."""
    try:
        m = evaluate(run, n, incumbent(run, accepted), incumbent(run), against="best")
    except BenchmarkError as e:
        run.say(n, "evaluate", f"against the best: {e}")
        return False
    run.say(n, "evaluate", f"against the best: {m.summary}")
    return m.accepted


def confirm(run: ActiveRun) -> None:
    """The run's headline: the best stack against the seed, measured fresh, interleaved, with its interval."""
    seed = run.workspace.root
    if not run.record.best_commit or run.record.best_commit == seed:
        return
    if not run.options.confirm:
        run.say(None, "confirm", "skipped (--no-confirm): the headline is not confirmed")
        return
    run.say(None, "confirm", "the best stack against the seed, side by side")
    try:
        m = evaluate(run, 0, incumbent(run), incumbent(run, seed), against="seed")
    except BenchmarkError as e:
        run.say(None, "confirm", f"failed: {e}")
        return
    run.update(headline=m.gain, headline_low=m.low, headline_high=_finite(m.high), noise=m.noise)
    run.say(None, "confirm", f"best vs seed: {m.gain:.3f}× ({m.interval}) over {m.pairs} pairs")


def _finite(value: float | None) -> float | None:
    return value if value is not None and value != float("inf") else None


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
