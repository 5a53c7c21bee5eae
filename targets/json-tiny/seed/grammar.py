"""JSON-schema constraints with xgrammar: compact JSON, one matcher per request."""

import json

import mlx.core as mx
import xgrammar as xgr
from xgrammar.kernels.apply_token_bitmask_mlx import apply_token_bitmask_mlx


class Grammars:
    def __init__(self, tokenizer, vocab_size: int):
        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info)

    def constraint(self, schema: dict) -> "Constraint":
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        return Constraint(xgr.GrammarMatcher(compiled), self.vocab_size)


class Constraint:
    def __init__(self, matcher: xgr.GrammarMatcher, vocab_size: int):
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: mx.array) -> mx.array:
        self.matcher.fill_next_token_bitmask(self.bitmask)
        return apply_token_bitmask_mlx(mx.array(self.bitmask.numpy()), logits, self.vocab_size)

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"grammar rejected token {token}")

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()
