"""Baseline worker: llama-cpp-python greedy decoding on a GGUF file, optionally constrained by a GBNF grammar.

python -m app.bench.llama_cpp_worker --gguf PATH [--constrained] [--threads N] [--repack off|on]
prints {"ready": true}, then answers each request line {"id", "prompt", "schema", "max_tokens"}
with {"id", "tokens", "text", "finish_reason", "ttft_s"} (or {"id", "error"}).
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app.bench import protocol

try:
    import llama_cpp
    import llama_cpp.llama_cpp as capi
    from llama_cpp import Llama, LlamaGrammar
except ImportError as missing:  # the bench extra; `atelier bench json` skips row c without it
    raise SystemExit(f'llama-cpp-python is not installed ({missing}): pip install -e ".[bench]"') from missing

END_OF_TURN = "<|im_end|>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path, help="GGUF model file")
    parser.add_argument("--constrained", action="store_true", help="constrain to the schema with a GBNF grammar")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--repack",
        choices=["off", "on"],
        default="off",
        help="llama.cpp extra buffer types (CPU repack, AMX); off is llama.cpp's --no-repack",
    )
    args = parser.parse_args()
    sys.stdout = sys.stderr
    worker = Worker.load(args.gguf, args.threads, args.constrained, args.repack == "on")
    protocol.serve(worker.generate)


@dataclass
class Worker:
    llm: Llama
    constrained: bool
    stop_tokens: set[int]

    @classmethod
    def load(cls, gguf: Path, threads: int, constrained: bool, repack: bool) -> "Worker":
        llm = load_llama(gguf, threads, repack)
        end = llm.tokenize(END_OF_TURN.encode(), add_bos=False, special=True)
        return cls(llm, constrained, {llm.token_eos(), *end[-1:]})

    def generate(self, request: dict) -> dict:
        start = time.perf_counter()
        grammar = self.grammar(request["schema"]) if self.constrained else None
        ids = self.llm.tokenize(request["prompt"].encode(), add_bos=False, special=True)
        self.llm.reset()
        steps = self.llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, grammar=grammar, reset=True)
        tokens: list[int] = []
        finish, ttft = "length", None
        for token in steps:
            ttft = ttft if ttft is not None else time.perf_counter() - start
            if token in self.stop_tokens:
                finish = "stop"
                break
            tokens.append(token)
            if len(tokens) >= request["max_tokens"]:
                break
        text = self.llm.detokenize(tokens).decode(errors="replace")
        return {"id": request["id"], "tokens": tokens, "text": text, "finish_reason": finish, "ttft_s": ttft}

    def grammar(self, schema: dict) -> LlamaGrammar:
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        sampler = llama_cpp.llama_sampler_init_grammar(
            self.llm._model.vocab, grammar._grammar.encode(), grammar._root.encode()
        )
        if not sampler:
            raise ValueError("llama.cpp could not parse the GBNF grammar built from the schema")
        llama_cpp.llama_sampler_free(sampler)
        return grammar


def load_llama(gguf: Path, threads: int, repack: bool) -> Llama:
    """Llama() does not expose use_extra_bufts, so its default model params are swapped while it loads."""
    defaults = capi.llama_model_default_params

    def params() -> capi.llama_model_params:
        chosen = defaults()
        chosen.use_extra_bufts = repack
        return chosen

    capi.llama_model_default_params = params
    try:
        return Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, verbose=False)
    finally:
        capi.llama_model_default_params = defaults


if __name__ == "__main__":
    main()
