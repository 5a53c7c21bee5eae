"""Time a candidate stack on the workload, one request at a time, measured from outside the stack, and check what it
answered.

python bench.py --stack WORKSPACE --model MODEL_DIR [--draft DIR] --inputs CASES_DIR --cache CACHE_DIR
Starts the stack through the launch prefix in $ATELIER_CONFINE, waits for ready, sends one untimed warm-up
request, then each case once in a fresh random order, and prints METRIC lines: latency_s (median request round
trip), tokens_per_s (all output tokens over all round trips), acceptance (accepted over verified predicted tokens),
predicted_share (output tokens that were accepted predicted tokens), startup_s, checked_outputs. A random sample
of the timed answers must equal the reference outputs the checker cached for these inputs (check.py's
comparison): else CHECK FAIL and exit 1.
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).absolute().parent))

from check import cached_reference, compare, stat  # noqa: E402
from workload import WARMUP, Stack, StackError, checked_sample, load_cases, one_line  # noqa: E402

NO_REFERENCE = "no reference outputs in the cache for these inputs (run the checker first)"


def main() -> int:
    args = parse_args()
    cases = load_cases(args.inputs, args.model)
    expected = cached_reference(args.model, cases, args.cache)
    if expected is None:
        return fail(NO_REFERENCE)
    chance = random.SystemRandom()
    chance.shuffle(cases)
    try:
        answers, latencies, startup = timed(args, cases)
    except StackError as error:
        return fail(str(error))
    checked = checked_sample(cases, chance)
    for case in checked:
        reasons = compare(answers[case.name], expected[case.name])
        if reasons:
            return fail(f"{case.name} differs from the reference: {reasons[0]}")
    tokens = sum(len(a["tokens"]) for a in answers.values() if isinstance(a.get("tokens"), list))
    drafted = sum(stat(a, "drafted") for a in answers.values())
    accepted = sum(stat(a, "accepted") for a in answers.values())
    print(f"METRIC latency_s {statistics.median(latencies):.4f}")
    print(f"METRIC tokens_per_s {tokens / sum(latencies):.3f}")
    print(f"METRIC acceptance {accepted / drafted if drafted else 0.0:.4f}")
    print(f"METRIC predicted_share {accepted / tokens if tokens else 0.0:.4f}")
    print(f"METRIC startup_s {startup:.3f}")
    print(f"METRIC checked_outputs {len(checked)}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="predicted-outputs benchmark")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--draft", default="", help="draft model folder, passed on to the stack (empty: none)")
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path, help="the checker's cache: its reference outputs")
    return parser.parse_args()


def timed(args: argparse.Namespace, cases: list) -> tuple[dict, list[float], float]:
    """Each case's answer, each round trip, and the time until the stack was ready."""
    started = time.perf_counter()
    answers, latencies = {}, []
    with Stack(args.stack, args.model, Path(args.draft) if args.draft else None) as stack:
        stack.wait_ready()
        startup = time.perf_counter() - started
        stack.ask(WARMUP)
        for case in cases:
            sent = time.perf_counter()
            answers[case.name] = stack.ask(case.request())
            latencies.append(time.perf_counter() - sent)
    return answers, latencies, startup


def fail(reason: str) -> int:
    print(f"CHECK FAIL benchmark: {one_line(reason)[:400]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
