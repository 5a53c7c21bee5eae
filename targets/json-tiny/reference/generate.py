"""Reference outputs: constrained greedy decoding with plain mlx-lm on the model as shipped.

Each case's prompt is encoded without added special tokens; xgrammar constrains every step to
compact JSON (no free whitespace) matching the case's schema; decoding stops at a stop token or
after max_tokens tokens.
"""

import json
from pathlib import Path

import mlx.core as mx
import xgrammar as xgr
from mlx_lm import load
from mlx_lm.generate import generate_step
from xgrammar.kernels.apply_token_bitmask_mlx import apply_token_bitmask_mlx


class SchemaProcessor:
    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int, prompt_length: int):
        self.matcher = xgr.GrammarMatcher(compiled)
        self.vocab_size = vocab_size
        self.prompt_length = prompt_length
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if tokens.size > self.prompt_length:
            token = int(tokens[-1].item())
            if not self.matcher.accept_token(token):
                raise RuntimeError(f"grammar rejected token {token}")
        if self.matcher.is_terminated():
            return logits
        self.matcher.fill_next_token_bitmask(self.bitmask)
        return apply_token_bitmask_mlx(mx.array(self.bitmask.numpy()), logits, self.vocab_size)


class Reference:
    def __init__(self, model_dir: Path):
        self.model, self.tokenizer = load(str(model_dir))
        config = json.loads((Path(model_dir) / "config.json").read_text())
        self.vocab_size = config["vocab_size"]
        info = xgr.TokenizerInfo.from_huggingface(self.tokenizer._tokenizer, vocab_size=self.vocab_size)
        self.compiler = xgr.GrammarCompiler(info)
        self.stop_tokens = set(info.stop_token_ids)

    def generate(self, prompt: str, schema: dict, max_tokens: int) -> dict:
        ids = self.tokenizer._tokenizer.encode(prompt, add_special_tokens=False)
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        processor = SchemaProcessor(compiled, self.vocab_size, len(ids))
        tokens, finish = [], "length"
        steps = generate_step(mx.array(ids), self.model, max_tokens=max_tokens, logits_processors=[processor])
        for token, _ in steps:
            token = int(token)
            if token in self.stop_tokens:
                finish = "stop"
                break
            tokens.append(token)
        return {"tokens": tokens, "text": self.tokenizer._tokenizer.decode(tokens), "finish_reason": finish}
