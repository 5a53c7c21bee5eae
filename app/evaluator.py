"""The Performance Evaluator: interleaved pairs against the incumbent, judged by the sequential acceptance test."""

import math
import statistics
from pathlib import Path

from app.acceptance import Decision, Noise, Rule, decide
from app.roles import Measurement
from app.run import ActiveRun
from backends.executor import Profile

PROFILE_SLOWDOWN = 4  # a profiled benchmark may take this many times its timeout


class BenchmarkError(Exception):
    pass


class WrongOutput(BenchmarkError):
    """A benchmark call checked a sample of what it timed, and some of it was wrong."""


def parse_metrics(output: str) -> dict[str, float]:
    """The METRIC lines of a benchmark's output; a name printed twice is refused, never the last one taken."""
    metrics: dict[str, float] = {}
    for line in output.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "METRIC":
            try:
                value = float(words[2])
            except ValueError:
                continue
            if words[1] in metrics:
                raise BenchmarkError(f"the benchmark printed metric '{words[1]}' twice; one value per call is allowed")
            metrics[words[1]] = value
    return metrics


def mismatches(output: str) -> list[str]:
    """What the benchmark found wrong in the outputs it sampled and timed."""
    return [line.split("CHECK FAIL ", 1)[1] for line in output.splitlines() if "CHECK FAIL " in line]


def bench_once(run: ActiveRun, n: int | None, side: str, stack: Path, repeat: int) -> dict[str, float]:
    b = run.target.benchmark
    run.progress.role(n, "evaluator", f"benchmark {side} #{repeat + 1}")
    result = run.execute(b.command, stack, run.dir / "readonly" / b.inputs, b.timeout)
    if result.timed_out:
        raise BenchmarkError(f"benchmark timed out after {b.timeout:g} s ({side})")
    wrong = mismatches(result.output)
    if wrong:
        raise WrongOutput(f"the {side}'s measured outputs differ from the reference: {'; '.join(wrong[:3])}")
    if not result.ok:
        raise BenchmarkError(f"benchmark exited {result.exit_code} ({side}): {result.tail(3)}")
    metrics = parse_metrics(result.output)
    if b.metric not in metrics:
        expected = f"expected a line 'METRIC {b.metric} <value>'"
        raise BenchmarkError(f"benchmark printed no metric '{b.metric}' ({side}); {expected}")
    run.store.add_metrics(run.id, n if n is not None else 0, side, repeat, metrics)
    return metrics


def baseline(run: ActiveRun, stack: Path) -> tuple[float, Noise]:
    """The seed's median over the baseline's calls, and their spread: consecutive calls of one stack as pairs
    whose true log-ratio is 0, the first degrees of freedom of the run's noise."""
    repeats = run.options.baseline_repeats or max(4, 2 * run.target.benchmark.repeats)
    values = [bench_once(run, None, "baseline", stack, i)[run.target.benchmark.metric] for i in range(repeats)]
    noise = Noise()
    noise.add([math.log(a / b) for a, b in zip(values[::2], values[1::2], strict=False) if a > 0 and b > 0], 0.0)
    return statistics.median(values), noise


def run_noise(run: ActiveRun) -> Noise:
    """The run's noise so far, read back from every pair it measured (a resumed run carries it on)."""
    b = run.target.benchmark
    noise = Noise()
    for same, pairs in run.store.pairs(run.id, b.metric):
        ratios = [math.log(b.gain(c, i)) for i, c in pairs if c > 0 and i > 0]
        noise.add(ratios, 0.0 if same else None)
    return noise


def evaluate(run: ActiveRun, n: int, candidate: Path, incumbent: Path, against: str = "incumbent") -> Measurement:
    """Interleaved pairs (the order alternating) until the acceptance test decides or its cap is reached."""
    b, noise = run.target.benchmark, run_noise(run)
    rule = Rule.for_target(b.repeats)
    sides: dict[str, list[dict[str, float]]] = {"candidate": [], against: []}
    ratios: list[float] = []
    decision = None
    for i in range(rule.max_pairs):
        order = ((against, incumbent), ("candidate", candidate))
        for side, stack in order if i % 2 == 0 else order[::-1]:
            sides[side].append(bench_once(run, n, side, stack, i))
        ratios.append(math.log(b.gain(sides["candidate"][-1][b.metric], sides[against][-1][b.metric])))
        decision = decide(ratios, noise, rule)
        if decision.verdict != "more":
            break
    assert decision is not None
    cand = [m[b.metric] for m in sides["candidate"]]
    inc = [m[b.metric] for m in sides[against]]
    extra = {k: statistics.median(m[k] for m in sides["candidate"]) for k in sides["candidate"][0] if k != b.metric}
    noise.add(ratios)
    spread = noise.spread(rule.window) or decision.spread or 0.0
    accepted = decision.verdict == "accept"
    return Measurement(
        b.metric, cand, inc, statistics.median(cand), statistics.median(inc), decision.gain, spread, accepted,
        extra, _hints(decision, rule), decision.low, decision.high, decision.pairs, decision.why,
    )  # fmt: skip


def profile(run: ActiveRun, n: int, stack: Path, side: str = "candidate") -> tuple[Profile, Path]:
    """One more benchmark call under the executor's profiler, after the measurement and never counted in it;
    the summary is saved as runs/<id>/profiles/round-N/<side>.txt."""
    b = run.target.benchmark
    run.progress.role(n, "evaluator", f"profile {side}")
    folder = run.dir / "profiles" / f"round-{n}"
    found = run.profile(b.command, stack, run.dir / "readonly" / b.inputs, b.timeout * PROFILE_SLOWDOWN, folder / side)
    saved = folder / f"{side}.txt"
    where = f"full report ({run.target.executor}): {found.raw}\n" if found.raw else ""
    saved.write_text(f"# {found.tool}, {side} of round {n}\n{where}\n{found.summary}\n")
    run.say(n, "profile", f"{side} under {found.tool}{'' if found.ok else ' failed'}: {saved}")
    return found, saved


def _hints(decision: Decision, rule: Rule) -> list[str]:
    if decision.high < 1:
        return ["slower than the incumbent beyond its interval: revert the idea or find what regressed"]
    if decision.verdict != "accept":
        return [f"no gain of {rule.min_effect:.0%} shown: the change does not touch the bottleneck"]
    return []
