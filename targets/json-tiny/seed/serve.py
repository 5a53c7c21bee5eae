"""Serve constrained JSON generation as JSON lines on stdin/stdout.

python serve.py --model DIR
prints {"ready": true}, then answers each request line {"id", "prompt", "schema", "max_tokens"}
with {"id", "tokens", "text", "finish_reason"} (or {"id", "error"}).
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
    args = parser.parse_args()
    sys.stdout = sys.stderr
    knobs = Knobs.read()
    blas.select(knobs.blas)
    engine = build_engine(args.model, knobs)
    reply({"ready": True})
    for line in sys.stdin:
        if line.strip():
            reply(answer(engine, json.loads(line)))


def build_engine(folder: Path, knobs: Knobs):
    import model
    from engine import Engine, EngineConfig
    from grammar import Grammars
    from transformers import AutoTokenizer

    llama = model.load(folder, weights=knobs.weights, scale_dtype=knobs.scale_dtype)
    if knobs.compile == "on":
        model.compile_blocks(llama)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    grammars = Grammars(tokenizer, llama.config.vocab_size)
    config = EngineConfig(
        jump_forward=knobs.jump_forward == "on",
        draft_tokens=knobs.draft_tokens if knobs.draft == "prompt" else 0,
        compile=knobs.compile == "on",
    )
    return Engine(llama, tokenizer, grammars, config)


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
