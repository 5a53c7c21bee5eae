"""The Accuracy Judge's deterministic checks; no opinion can overrule them."""

from pathlib import Path

from app import outputs, readonly
from app.roles import Verdict
from app.run import ActiveRun


def judge(run: ActiveRun, n: int | None, stack: Path) -> Verdict:
    outputs.clear(run.dir / "cache")
    reasons = untouched(run, "before the checker")
    if reasons:
        return Verdict(False, reasons)
    for inputs in _inputs(run):
        run.progress.role(n, "judge", f"checker on {inputs.name}")
        result = run.execute(run.target.checker.command, stack, inputs, run.target.checker.timeout)
        if result.timed_out:
            reasons.append(f"checker timed out after {run.target.checker.timeout:g} s on {inputs.name}")
        elif not result.ok:
            failures = [line.removeprefix("CHECK FAIL ") for line in result.output.splitlines() if "CHECK FAIL" in line]
            reasons += failures or [f"checker exited {result.exit_code} on {inputs.name}: {result.tail(3)}"]
    outputs.keep(run.dir, n)
    reasons += untouched(run, "after the checker")
    return Verdict(not reasons, reasons)


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
