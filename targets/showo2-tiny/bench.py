"""Time a candidate stack: warm single-request latency of one image, measured from outside the stack.

python bench.py --stack WORKSPACE --model MODEL_DIR --inputs CASES_DIR --cache CACHE_DIR
Starts the stack, waits for ready, warms up with a short untimed request (2 steps), then generates every case once
in a fresh random order and prints METRIC latency_s (the mean round trip of one image), the stack's own
per-component times when it reports them (body_s, head_s, vae_s) and startup_s, then the physics floor of
floor.py: floor_s, floor_ratio (latency / floor), floor_gflop and the machine's matmul_gflops and bandwidth_gbs.
A random sample of the timed images (at least 2, or a quarter) is judged as the checker judges it against the
reference images the checker cached: a mismatch is CHECK FAIL benchmark: ... and exit 1; METRIC checked_outputs
says how many were judged.
"""

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check import cached_references, load_image  # noqa: E402
from metrics import judge  # noqa: E402
from stack import Stack, StackError, load_cases, load_thresholds, one_line, out_path  # noqa: E402

WARMUP_STEPS = 2
COMPONENTS = ("body_s", "head_s", "vae_s")
try:
    import floor
except ImportError:  # showo2-mlx ships no floor for the full-size model
    floor = None

NO_REFERENCE = "CHECK FAIL benchmark: no reference outputs in the cache for these inputs (run the checker first)"


def main() -> int:
    parser = argparse.ArgumentParser(description="showo2-tiny benchmark")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    args = parser.parse_args()
    cases = load_cases(args.inputs)
    expected = cached_references(args.model, cases, args.cache)
    if expected is None:
        print(NO_REFERENCE)
        return 1
    rng = random.SystemRandom()
    order = rng.sample(cases, len(cases))
    try:
        startup, latencies, answers, outs = timed(args.stack, args.model, order)
    except StackError as error:
        print(f"bench failed: {one_line(error)}", file=sys.stderr)
        return 1
    sampled = rng.sample(order, min(len(order), max(2, math.ceil(len(order) / 4))))
    wrong = [f"{case.name} differs from the reference: {reason}" for case in sampled
             if (reason := mismatch(outs[case.name], args.stack, expected[case.name]))]  # fmt: skip
    for failure in wrong:
        print(f"CHECK FAIL benchmark: {one_line(failure)}")
    if wrong:
        return 1
    report(args, statistics.fmean(latencies), answers, startup, order[0].steps)
    print(f"METRIC checked_outputs {len(sampled)}")
    return 0


def timed(workspace: Path, model: Path, order: list) -> tuple[float, list[float], list[dict], dict[str, Path]]:
    """Startup seconds, each case's round trip and answer, and where each image was written."""
    started = time.perf_counter()
    latencies, answers, outs = [], [], {}
    with Stack(workspace, model) as stack:
        stack.wait_ready()
        startup = time.perf_counter() - started
        stack.ask(order[0].request(out_path(workspace, "warmup"), steps=WARMUP_STEPS))
        for case in order:
            outs[case.name] = out_path(workspace, case.name)
            sent = time.perf_counter()
            answers.append(stack.ask(case.request(outs[case.name])))
            latencies.append(time.perf_counter() - sent)
    return startup, latencies, answers, outs


def mismatch(out: Path, workspace: Path, reference) -> str:
    """Why the image at out fails the checker's comparison with the reference ('' when it passes)."""
    try:
        image = load_image(out, workspace)
    except (StackError, OSError) as error:
        return str(error)
    return "; ".join(judge(image, reference, load_thresholds())[0])


def report(args: argparse.Namespace, latency: float, answers: list[dict], startup: float, steps: int) -> None:
    print(f"METRIC latency_s {latency:.4f}")
    timings = [answer.get("timings") if isinstance(answer.get("timings"), dict) else {} for answer in answers]
    for name in COMPONENTS:
        values = [t.get(name) for t in timings]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            print(f"METRIC {name} {statistics.fmean(values):.4f}")
    print(f"METRIC startup_s {startup:.3f}")
    for name, value in (floor.metrics(args.model, args.stack, steps, latency) if floor else {}).items():
        print(f"METRIC {name} {value:.4g}")


if __name__ == "__main__":
    sys.exit(main())
