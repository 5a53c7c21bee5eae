"""The Accuracy Judge's deterministic checks; no opinion can overrule them."""

from pathlib import Path

from app import outputs, readonly
from app.roles import Verdict
from app.run import ActiveRun
from backends.executor import CommandResult


def judge(run: ActiveRun, n: int | None, stack: Path) -> Verdict:
    """The checker on the public inputs, then on each hidden input. What a hidden check found is kept for the user
    as the verdict's detail; the reasons, which agents read, say only which hidden set failed. A stack's server is
    checked with the public inputs only: the engine is checked on every set through the stack's own protocol, and
    the server's faults (threads, protocol, concurrency) are the agents' to read and fix."""
    outputs.clear(run.dir / "cache")
    reasons = untouched(run, "before the checker")
    if reasons:
        return Verdict(False, reasons)
    detail: list[str] = []
    for k, inputs in enumerate(_inputs(run)):
        run.progress.role(n, "judge", f"checker on {'the public inputs' if k == 0 else f'hidden set {k}'}")
        command = run.target.checker.command if k == 0 else run.target.checker.command.replace("{serve}", "''")
        result = run.execute(command, stack, inputs, run.target.checker.timeout)
        failures = _failures(run, result, inputs.name)
        if failures and k > 0:
            detail += [f"hidden set {k} ({inputs.name}): {line}" for line in failures]
            failures = [f"hidden case set {k} failed: {len(failures)} check(s) failed (details are kept from agents)"]
        reasons += failures
    outputs.keep(run.dir, n)
    reasons += untouched(run, "after the checker")
    return Verdict(not reasons, reasons, detail=detail)


def _failures(run: ActiveRun, result: CommandResult, name: str) -> list[str]:
    if result.timed_out:
        return [f"checker timed out after {run.target.checker.timeout:g} s on {name}"]
    if result.ok:
        return []
    failures = [line.split("CHECK FAIL ", 1)[1] for line in result.output.splitlines() if "CHECK FAIL " in line]
    return failures or [f"checker exited {result.exit_code} on {name}: {result.tail(3)}"]


def _inputs(run: ActiveRun) -> list[Path]:
    public = run.dir / "readonly" / run.target.checker.inputs
    return [public, *(run.dir / "hidden" / h for h in run.target.hidden)]


def untouched(run: ActiveRun, when: str) -> list[str]:
    """Each read-only input that changed; they are put back before returning."""
    changed = readonly.verify(run.dir, run.manifest)
    if not changed:
        return []
    readonly.restore(run.target, run.dir, run.manifest)
    return [f"read-only input {line} ({when})" for line in changed]
