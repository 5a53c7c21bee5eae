"""Time a candidate stack: warm single-request latency of one image, measured from outside the stack.

python bench.py --stack WORKSPACE --model MODEL_DIR --inputs CASES_DIR
Starts the stack, waits for ready, warms up with a short untimed request (2 steps), then generates the first case
and prints METRIC latency_s (the request's round trip), the stack's own per-component times when it reports them
(body_s, head_s, vae_s) and startup_s, then the physics floor of floor.py: floor_s, floor_ratio (latency / floor),
floor_gflop and the machine's matmul_gflops and bandwidth_gbs.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor  # noqa: E402
from stack import Stack, StackError, load_cases  # noqa: E402

WARMUP_STEPS = 2
COMPONENTS = ("body_s", "head_s", "vae_s")


def main() -> int:
    parser = argparse.ArgumentParser(description="showo2-tiny benchmark")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", required=True, type=Path)
    args = parser.parse_args()
    case = load_cases(args.inputs)[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, Stack(args.stack, args.model) as stack:
        try:
            stack.wait_ready()
            startup = time.perf_counter() - started
            stack.ask(case.request(Path(folder) / "warmup.png", steps=WARMUP_STEPS))
            sent = time.perf_counter()
            answer = stack.ask(case.request(Path(folder) / "image.png"))
            latency = time.perf_counter() - sent
        except StackError as error:
            print(f"bench failed: {error}", file=sys.stderr)
            return 1
    print(f"METRIC latency_s {latency:.4f}")
    timings = answer.get("timings", {})
    for name in COMPONENTS:
        if isinstance(timings.get(name), int | float):
            print(f"METRIC {name} {timings[name]:.4f}")
    print(f"METRIC startup_s {startup:.3f}")
    for name, value in floor.metrics(args.model, args.stack, case.steps, latency).items():
        print(f"METRIC {name} {value:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
