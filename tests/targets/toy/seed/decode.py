import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import mlx.core as mx
from llama import load

HERE = Path(__file__).parent


def knobs() -> dict:
    spec = tomllib.loads((HERE / "atelier.knobs.toml").read_text())
    return {name: knob["default"] for name, knob in spec.items()}


def decode(model, prompt: list[int], max_tokens: int, settings: dict) -> list[int]:
    forward = mx.compile(model) if settings["compile"] else model
    if settings["cache"] == "kv":
        cache = model.make_cache()
        logits = forward(mx.array([prompt]), cache=cache)
        out = []
        for _ in range(max_tokens):
            token = mx.argmax(logits[0, -1]).item()
            out.append(token)
            logits = forward(mx.array([[token]]), cache=cache)
        return out
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(mx.argmax(forward(mx.array([tokens]))[0, -1]).item())
    return tokens[len(prompt) :]


def extra_work() -> float:
    """Work added on purpose, as a fraction of each answer's own time (the acceptance bench's known effects):
    none unless the stack holds an extra_work.txt."""
    path = HERE / "extra_work.txt"
    return float(path.read_text()) if path.exists() else 0.0


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    """JSON lines: {"ready": true} once loaded, then one {"id", "tokens"} answer per {"id", "prompt", "max_tokens"}."""
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    args = p.parse_args()
    model = load(Path(args.model))
    settings, extra = knobs(), extra_work()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        tokens = decode(model, request["prompt"], request["max_tokens"], settings)
        spin(extra * (time.perf_counter() - start))
        print(json.dumps({"id": request["id"], "tokens": tokens}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
