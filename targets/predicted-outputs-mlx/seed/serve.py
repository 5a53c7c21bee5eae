"""Serve greedy generation with predicted outputs as JSON lines on stdin/stdout, on MLX.

python serve.py --model DIR [--draft DIR]
prints {"ready": true}, then answers each request line {"id", "prompt", "prediction", "max_tokens"}
with {"id", "tokens", "text", "finish_reason", "ttft_s", "stats"} (or {"id", "error"}).
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import blas
from knobs import Knobs

PROTOCOL = sys.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="mlx-lm model folder")
    parser.add_argument("--draft", default="", help="draft model folder (unused by this stack)")
    args = parser.parse_args()
    sys.stdout = sys.stderr
    engine = build_engine(args.model, Knobs.read())
    reply({"ready": True})
    for line in sys.stdin:
        if line.strip():
            reply(answer(engine, json.loads(line)))


def build_engine(folder: Path, knobs: Knobs):
    """The engine the knobs describe; blas=openblas with fp32 weights first re-executes this process."""
    if knobs.weights == "fp32":
        blas.select(knobs.blas)
    from engine import Engine, EngineConfig, load

    model, tokenizer, stops = load(folder, knobs.weights)
    config = EngineConfig(predicted=knobs.predicted == "on", k=knobs.k, realign=knobs.realign == "ngram")
    return Engine(model, tokenizer, stops, config)


def answer(engine, raw: dict) -> dict:
    from engine import Request

    try:
        return asdict(engine.generate(Request.from_dict(raw)))
    except Exception as error:  # noqa: BLE001 - one bad request must not end the server
        return {"id": raw.get("id"), "error": f"{type(error).__name__}: {error}"}


def reply(message: dict) -> None:
    PROTOCOL.write(json.dumps(message) + "\n")
    PROTOCOL.flush()


if __name__ == "__main__":
    main()
