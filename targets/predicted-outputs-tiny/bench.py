"""Time a candidate stack on the workload, one request at a time, measured from outside the stack.

python bench.py --stack WORKSPACE --model MODEL_DIR [--draft DIR] --inputs CASES_DIR
Starts the stack, waits for ready, sends one untimed warm-up request, then each case once and prints METRIC
lines: latency_s (median request round trip), tokens_per_s (all output tokens over all round trips),
acceptance (accepted over verified predicted tokens), predicted_share (output tokens that were accepted
predicted tokens), startup_s.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).absolute().parent))

from workload import WARMUP, Stack, StackError, load_cases  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="predicted-outputs benchmark")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--draft", default="", help="draft model folder, passed on to the stack (empty: none)")
    parser.add_argument("--inputs", required=True, type=Path)
    args = parser.parse_args()
    cases = load_cases(args.inputs, args.model)
    started = time.perf_counter()
    latencies, tokens, drafted, accepted = [], 0, 0, 0
    with Stack(args.stack, args.model, Path(args.draft) if args.draft else None) as stack:
        try:
            stack.wait_ready()
            startup = time.perf_counter() - started
            stack.ask(WARMUP)
            for case in cases:
                sent = time.perf_counter()
                answer = stack.ask(case.request())
                latencies.append(time.perf_counter() - sent)
                tokens += len(answer.get("tokens", []))
                drafted += answer.get("stats", {}).get("drafted", 0)
                accepted += answer.get("stats", {}).get("accepted", 0)
        except StackError as error:
            print(f"bench failed: {error}", file=sys.stderr)
            return 1
    print(f"METRIC latency_s {statistics.median(latencies):.4f}")
    print(f"METRIC tokens_per_s {tokens / sum(latencies):.3f}")
    print(f"METRIC acceptance {accepted / drafted if drafted else 0.0:.4f}")
    print(f"METRIC predicted_share {accepted / tokens if tokens else 0.0:.4f}")
    print(f"METRIC startup_s {startup:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
