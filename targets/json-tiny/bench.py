"""Time a candidate stack on the workload, measured from outside the stack.

python bench.py --stack WORKSPACE --model MODEL_DIR --inputs CASES_DIR
Starts the stack, waits for ready, sends one untimed warm-up request, then sends the cases one at a
time and prints METRIC lines: latency_s (sum of request round trips), tokens_per_s, startup_s.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import WARMUP, Stack, StackError, load_cases  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="json-tiny benchmark")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--draft", default="", help="draft model folder, passed on to the stack (empty: none)")
    parser.add_argument("--inputs", required=True, type=Path)
    args = parser.parse_args()
    cases = load_cases(args.inputs, args.model)
    started = time.perf_counter()
    with Stack(args.stack, args.model, Path(args.draft) if args.draft else None) as stack:
        try:
            stack.wait_ready()
            startup = time.perf_counter() - started
            stack.ask(WARMUP)
            latency, tokens = 0.0, 0
            for case in cases:
                sent = time.perf_counter()
                answer = stack.ask(case.request())
                latency += time.perf_counter() - sent
                tokens += len(answer.get("tokens", []))
        except StackError as error:
            print(f"bench failed: {error}", file=sys.stderr)
            return 1
    print(f"METRIC latency_s {latency:.4f}")
    print(f"METRIC tokens_per_s {tokens / latency:.3f}")
    print(f"METRIC startup_s {startup:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
