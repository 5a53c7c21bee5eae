"""Median single-request latency of the seed engine, plain greedy vs predicted, side by side in one process.

python side_by_side.py --model MODEL_DIR [--inputs suite] [--weights quantized|fp32] [--blas bundled|openblas]
                       [--k 8] [--repeats 3]
Loads the model once, then for each repeat and case runs plain decoding and predicted decoding alternately (the
order flips every repeat), checks both give the same tokens, and prints each side's median request latency, their
ratio, the accepted share and the prediction's overlap with the output.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).absolute().parent
sys.path[:0] = [str(HERE / "seed"), str(HERE)]

import blas  # noqa: E402
from workload import load_cases, overlap  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", default=HERE / "suite", type=Path)
    parser.add_argument("--weights", default="quantized", choices=["quantized", "fp32"])
    parser.add_argument("--blas", default="bundled", choices=["bundled", "openblas"])
    parser.add_argument("--k", default=8, type=int)
    parser.add_argument("--repeats", default=3, type=int)
    args = parser.parse_args()
    blas.select(args.blas)
    from engine import Engine, EngineConfig, Request, load

    model, tokenizer, stops = load(args.model, args.weights)
    sides = {"plain": EngineConfig(predicted=False), "predicted": EngineConfig(predicted=True, k=args.k)}
    engines = {name: Engine(model, tokenizer, stops, config) for name, config in sides.items()}
    cases = load_cases(args.inputs, args.model)
    engines["plain"].generate(Request("warmup", cases[0].prompt, "", 2))
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    outputs, accepted, shares = {}, 0, []
    for repeat in range(args.repeats):
        for case in cases:
            for name in sides if repeat % 2 == 0 else reversed(sides):
                started = time.perf_counter()
                result = engines[name].generate(Request(case.name, case.prompt, case.prediction, case.max_tokens))
                latencies[name].append(time.perf_counter() - started)
                if outputs.setdefault(case.name, result.tokens) != result.tokens:
                    print(f"{case.name}: {name} decoding gave other tokens", file=sys.stderr)
                    return 1
                if repeat == 0 and name == "predicted":
                    accepted += result.stats.accepted
                    shares.append(overlap(result.tokens, engines[name].encode(case.prediction)))
    plain, predicted = (statistics.median(latencies[name]) for name in sides)
    tokens = sum(len(tokens) for tokens in outputs.values())
    print(f"weights={args.weights} blas={args.blas} k={args.k}: {len(cases)} cases x {args.repeats} repeats, "
          f"{tokens} output tokens, identical on both sides")  # fmt: skip
    print(f"median latency plain {plain:.2f} s, predicted {predicted:.2f} s, speedup {plain / predicted:.2f}x")
    print(f"accepted predicted tokens {accepted / max(tokens, 1):.0%} of output; overlap {statistics.mean(shares):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
