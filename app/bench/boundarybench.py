"""What the trust boundary costs a round: checker and benchmark calls confined against the same calls unconfined.

A run of the target (the offline tuner's layout) checks its seed once to fill the reference cache, then plays each
call both ways, interleaved, `--repeats` times, each on a fresh copy of the seed's snapshot: confined as every run
plays it (the harness in its sandbox, the candidate in its own) and in the open as the tuner played it before the
boundary. It prints the medians, their ratios, and the benchmark's metric both ways, which must agree within the
noise.
"""

import argparse
import statistics
import time
from pathlib import Path

from app.evaluator import parse_metrics
from app.judge import judge
from app.run import ActiveRun, Options, create
from app.store import Store
from app.target import load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="json-tiny", help="a bundled target or a bundle folder (json-tiny)")
    parser.add_argument("--repeats", type=int, default=3, help="calls each way, interleaved (default 3)")


def main(args: argparse.Namespace) -> int:
    run = create(load(args.target), Options(), Store())
    seed = run.snapshot(run.workspace.head).path
    if not judge(run, None, seed).passed:
        print("the seed fails its checker: nothing to measure")
        return 1
    times: dict[str, list[float]] = {}
    metric = run.target.benchmark.metric
    for _ in range(args.repeats):
        for confined in (True, False):
            for call, took, value in calls(run, seed, confined):
                times.setdefault(f"{call} {'confined' if confined else 'open'}", []).append(took)
                if value is not None:
                    times.setdefault(f"{metric} {'confined' if confined else 'open'}", []).append(value)
    print(report(times, metric))
    return 0


def calls(run: ActiveRun, seed: Path, confined: bool) -> list[tuple[str, float, float | None]]:
    if not confined:
        run.confinement = lambda copy: (None, run.env)  # type: ignore[method-assign]
    try:
        found = []
        for call, command, inputs in (
            ("checker", run.target.checker.command, run.dir / "readonly" / run.target.checker.inputs),
            ("benchmark", run.target.benchmark.command, run.dir / "readonly" / run.target.benchmark.inputs),
        ):
            start = time.perf_counter()
            result = run.execute(command, seed, inputs, max(run.target.checker.timeout, run.target.benchmark.timeout))
            took = time.perf_counter() - start
            if not result.ok:
                raise SystemExit(f"{call} failed ({'confined' if confined else 'open'}): {result.tail(5)}")
            value = parse_metrics(result.output).get(run.target.benchmark.metric) if call == "benchmark" else None
            found.append((call, took, value))
        return found
    finally:
        run.__dict__.pop("confinement", None)


def report(times: dict[str, list[float]], metric: str) -> str:
    lines = [f"{'call':<28}{'median s':>10}{'min s':>10}  n"]
    for name, values in times.items():
        lines.append(f"{name:<28}{statistics.median(values):>10.3f}{min(values):>10.3f}  {len(values)}")
    for call in ("checker", "benchmark", metric):
        inside, outside = times.get(f"{call} confined"), times.get(f"{call} open")
        if inside and outside:
            ratio = statistics.median(inside) / statistics.median(outside)
            lines.append(f"{call}: confined / open = {ratio:.3f}")
    return "\n".join(lines)
