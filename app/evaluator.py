"""The Performance Evaluator: interleaved repeats against the incumbent, judged against the run's noise band."""

import statistics
from pathlib import Path

from app.roles import Measurement
from app.run import ActiveRun
from backends.executor import Profile

MIN_NOISE = 0.01
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


def noise_band(values: list[float]) -> float:
    """Relative half-range ±(max − min) / 2 / median of the baseline's own repeats: a candidate whose median
    stays inside the band the baseline's repeats drew around their median is not told apart from noise."""
    median = statistics.median(values)
    return max(MIN_NOISE, (max(values) - min(values)) / 2 / median) if median else MIN_NOISE


def baseline(run: ActiveRun, stack: Path) -> tuple[float, float]:
    repeats = run.options.baseline_repeats or max(4, 2 * run.target.benchmark.repeats)
    values = [bench_once(run, None, "baseline", stack, i)[run.target.benchmark.metric] for i in range(repeats)]
    return statistics.median(values), noise_band(values)


def evaluate(run: ActiveRun, n: int, candidate: Path, incumbent: Path) -> Measurement:
    b = run.target.benchmark
    sides: dict[str, list[dict[str, float]]] = {"candidate": [], "incumbent": []}
    for i in range(b.repeats):
        for side, stack in (("incumbent", incumbent), ("candidate", candidate)):
            sides[side].append(bench_once(run, n, side, stack, i))
    cand = [m[b.metric] for m in sides["candidate"]]
    inc = [m[b.metric] for m in sides["incumbent"]]
    c_med, i_med = statistics.median(cand), statistics.median(inc)
    gain = b.gain(c_med, i_med)
    noise = run.record.noise or MIN_NOISE
    extra = {k: statistics.median(m[k] for m in sides["candidate"]) for k in sides["candidate"][0] if k != b.metric}
    return Measurement(b.metric, cand, inc, c_med, i_med, gain, noise, gain > 1 + noise, extra, _hints(gain, noise))


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


def _hints(gain: float, noise: float) -> list[str]:
    if gain < 1 - noise:
        return ["slower than the incumbent beyond noise: revert the idea or find what regressed"]
    if gain <= 1 + noise:
        return ["no gain beyond noise: the change does not touch the bottleneck"]
    return []
