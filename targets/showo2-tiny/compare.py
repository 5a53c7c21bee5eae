"""Warm latency of the PyTorch reference and of stacks, measured side by side (interleaved) on this machine.

python compare.py --model MODEL_DIR --inputs suite --stack DIR [--stack DIR ...] [--repeats 5]
Prints one line per row (median and min seconds of one image) and each stack's ratio to the reference.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stack import Stack, load_cases, out_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="showo2-tiny: reference against stacks, side by side")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", type=Path, default=HERE / "suite")
    parser.add_argument("--stack", action="append", type=Path, default=[])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from reference.generate import Reference

    case = load_cases(args.inputs)[0]
    reference = Reference(args.model)
    reference.generate(case.prompt, case.seed, 2, case.guidance)
    times: dict[str, list[float]] = {"reference": []} | {str(s): [] for s in args.stack}
    stacks = [Stack(s, args.model) for s in args.stack]
    for folder, stack in zip(args.stack, stacks, strict=True):
        stack.wait_ready()
        stack.ask(case.request(out_path(folder, "warmup"), steps=2))
    for _ in range(args.repeats):
        started = time.perf_counter()
        reference.generate(case.prompt, case.seed, case.steps, case.guidance)
        times["reference"].append(time.perf_counter() - started)
        for folder, stack in zip(args.stack, stacks, strict=True):
            started = time.perf_counter()
            stack.ask(case.request(out_path(folder, case.name)))
            times[str(folder)].append(time.perf_counter() - started)
    for stack in stacks:
        stack.close()
    base = statistics.median(times["reference"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name}: median {median:.3f} s, min {min(values):.3f} s, {base / median:.2f}x the reference")


if __name__ == "__main__":
    main()
