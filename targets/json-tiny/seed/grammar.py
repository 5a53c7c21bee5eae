"""JSON-schema constraints with xgrammar: compact JSON, one matcher per request."""

import json

import mlx.core as mx
import numpy as np
import xgrammar as xgr
from xgrammar.kernels.apply_token_bitmask_mlx import apply_token_bitmask_mlx


class Grammars:
    def __init__(self, tokenizer, vocab_size: int):
        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info)

    def constraint(self, schema: dict, max_draft: int = 0) -> "Constraint":
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        return Constraint(xgr.GrammarMatcher(compiled), self.vocab_size, max_draft)


class Constraint:
    def __init__(self, matcher: xgr.GrammarMatcher, vocab_size: int, max_draft: int = 0):
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.max_draft = max_draft
        self.bitmask = xgr.allocate_token_bitmask(max_draft + 1, vocab_size)
        self.stop_tokens = set(matcher.stop_token_ids)

    def fill(self) -> None:
        self.matcher.fill_next_token_bitmask(self.bitmask)

    def mask(self, logits: mx.array) -> mx.array:
        self.fill()
        return self.masks(logits, 1)

    def walk(self, draft: list[int]) -> list[int]:
        """Advance over the longest valid prefix of draft, filling one mask row before each token and one after."""
        valid = []
        for token in draft[: self.max_draft]:
            self.matcher.fill_next_token_bitmask(self.bitmask, len(valid))
            if token in self.stop_tokens or not self.matcher.accept_token(token):
                break
            valid.append(token)
        self.matcher.fill_next_token_bitmask(self.bitmask, len(valid))
        return valid

    def masks(self, logits: mx.array, rows: int) -> mx.array:
        return apply_token_bitmask_mlx(mx.array(self.bitmask[:rows].numpy()), logits, self.vocab_size)

    def bits(self, rows: int) -> np.ndarray:
        packed = self.bitmask[:rows].numpy().view(np.uint8)
        return np.unpackbits(packed, axis=1, bitorder="little")[:, : self.vocab_size].astype(bool)

    def allowed(self, rows: int) -> np.ndarray:
        """The token ids that any of the first rows allows, ascending."""
        return np.flatnonzero(self.bits(rows).any(axis=0))

    def dense_masks(self, rows: int, allowed: np.ndarray) -> mx.array:
        return mx.array(self.bits(rows)[:, allowed])

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"grammar rejected token {token}")

    def rollback(self, count: int) -> None:
        if count:
            self.matcher.rollback(count)

    def forced(self) -> str:
        return self.matcher.find_jump_forward_string()

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()
