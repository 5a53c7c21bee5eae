"""Baseline worker: plain mlx-lm greedy decoding, optionally constrained by xgrammar, as JSON lines on stdin/stdout.

python -m app.bench.mlx_lm_worker --model DIR [--constrained] [--weights quantized|fp32] [--blas bundled|openblas]
The logits processor is the json-tiny reference's own (targets/json-tiny/reference/generate.py).
prints {"ready": true}, then answers each request line {"id", "prompt", "schema", "max_tokens"}
with {"id", "tokens", "text", "finish_reason", "ttft_s"} (or {"id", "error"}).
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import xgrammar as xgr
from mlx_lm import load
from mlx_lm.generate import generate_step
from mlx_lm.utils import dequantize_model

from app.bench import protocol

JSON_TINY = Path(__file__).resolve().parents[2] / "targets" / "json-tiny"
sys.path[:0] = [str(JSON_TINY), str(JSON_TINY / "seed")]
import blas  # noqa: E402
from reference.generate import SchemaProcessor  # noqa: E402

Processor = Callable[[mx.array, mx.array], mx.array]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="mlx-lm model folder")
    parser.add_argument("--constrained", action="store_true", help="constrain to the schema with xgrammar")
    parser.add_argument("--weights", choices=["quantized", "fp32"], default="quantized")
    parser.add_argument("--blas", choices=["bundled", "openblas"], default="bundled")
    args = parser.parse_args()
    sys.stdout = sys.stderr
    blas.select(args.blas)
    worker = Worker.load(args.model, args.weights, args.constrained)
    protocol.serve(worker.generate)


@dataclass
class Worker:
    model: nn.Module
    tokenizer: Any
    vocab_size: int
    compiler: xgr.GrammarCompiler | None
    stop_tokens: set[int]

    @classmethod
    def load(cls, folder: Path, weights: str, constrained: bool) -> "Worker":
        model, tokenizer = load(str(folder))[:2]
        if weights == "fp32":
            dequantize(model)
        vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
        if not constrained:
            return cls(model, tokenizer, vocab_size, None, set(tokenizer.eos_token_ids))
        info = xgr.TokenizerInfo.from_huggingface(tokenizer._tokenizer, vocab_size=vocab_size)
        return cls(model, tokenizer, vocab_size, xgr.GrammarCompiler(info), set(info.stop_token_ids))

    def generate(self, request: dict) -> dict:
        start = time.perf_counter()
        ids = self.tokenizer._tokenizer.encode(request["prompt"], add_special_tokens=False)
        processors: list[Processor] | None = [self.processor(request["schema"], len(ids))] if self.compiler else None
        steps = generate_step(mx.array(ids), self.model, max_tokens=request["max_tokens"], logits_processors=processors)
        tokens, finish, ttft = [], "length", None
        for token, _ in steps:
            ttft = ttft if ttft is not None else time.perf_counter() - start
            if token in self.stop_tokens:
                finish = "stop"
                break
            tokens.append(int(token))
        text = self.tokenizer._tokenizer.decode(tokens)
        return {"id": request["id"], "tokens": tokens, "text": text, "finish_reason": finish, "ttft_s": ttft}

    def processor(self, schema: dict, prompt_length: int) -> SchemaProcessor:
        assert self.compiler is not None
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        return SchemaProcessor(compiled, self.vocab_size, prompt_length)


def dequantize(model: nn.Module) -> None:
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            module.scales = module.scales.astype(mx.float32)
            if module.biases is not None:
                module.biases = module.biases.astype(mx.float32)
    dequantize_model(model)
    mx.eval(model.parameters())


if __name__ == "__main__":
    main()
