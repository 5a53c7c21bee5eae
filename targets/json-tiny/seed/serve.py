"""Serve constrained JSON generation as JSON lines on stdin/stdout.

python serve.py --model DIR [--draft DIR]
prints {"ready": true}, then answers each request line {"id", "prompt", "schema", "max_tokens"}
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
SPARSE_HEAD_LIMIT = 8192


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="mlx-lm model folder")
    parser.add_argument("--draft", type=Path, help="mlx-lm folder of a draft model with the same tokenizer")
    args = parser.parse_args()
    sys.stdout = sys.stderr
    knobs = Knobs.read()
    blas.select(knobs.blas)
    engine = build_engine(args.model, knobs, args.draft)
    reply({"ready": True})
    for line in sys.stdin:
        if line.strip():
            reply(answer(engine, json.loads(line)))


def build_engine(folder: Path, knobs: Knobs, draft: Path | None = None):
    import model
    from drafts import ModelDrafter
    from engine import Engine, EngineConfig
    from grammar import Grammars
    from transformers import AutoTokenizer

    llama = model.load(folder, weights=knobs.weights, scale_dtype=knobs.scale_dtype)
    if knobs.compile == "on":
        model.compile_blocks(llama)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    grammars = Grammars(tokenizer, llama.config.vocab_size)
    config = EngineConfig(
        prefill_step_size=knobs.prefill_step_size,
        jump_forward=knobs.jump_forward == "on",
        draft_tokens=knobs.draft_tokens if knobs.draft == "prompt" else 0,
        compile=knobs.compile == "on",
        prompt_cache=knobs.prompt_cache == "prefix",
        kv_bits={"full": 0, "q8": 8, "q4": 4}[knobs.kv_cache],
        sparse_head=SPARSE_HEAD_LIMIT if knobs.sparse_head == "on" else 0,
    )
    drafter = None
    if knobs.draft == "model":
        drafter = ModelDrafter(model.load(draft or folder), knobs.draft_tokens, knobs.prefill_step_size)
    return Engine(llama, tokenizer, grammars, config, drafter)


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
