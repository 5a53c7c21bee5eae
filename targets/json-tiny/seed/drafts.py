"""Drafts for one-forward verification: the grammar's forced text, prompt lookup, or a small draft model.

A draft only saves forwards; the engine keeps the tokens that constrained greedy decoding would
have emitted anyway, so a wrong draft costs time, never tokens.
"""

from dataclasses import dataclass, field

import mlx.core as mx
from grammar import Constraint

JUMP_TOKENS = 32
MIN_MATCH = 4
MAX_MATCH = 32
CHARS_PER_TOKEN = 8


@dataclass
class Draft:
    tokens: list[int] = field(default_factory=list)
    forced: int = 0


class Drafter:
    def __init__(self, tokenizer, jump_forward: bool, lookup_tokens: int):
        self.tokenizer = tokenizer
        self.jump_forward = jump_forward
        self.lookup_tokens = lookup_tokens

    @property
    def max_tokens(self) -> int:
        return (JUMP_TOKENS if self.jump_forward else 0) + self.lookup_tokens

    def start(self, prompt: str, ids: list[int]) -> None:
        self.prompt = prompt

    def propose(self, constraint: Constraint, output: list[int], room: int) -> Draft:
        if room <= 0 or not self.max_tokens:
            return Draft()
        forced = constraint.forced() if self.jump_forward else ""
        forced_tokens = self.encode(forced)[:JUMP_TOKENS]
        cap = len(forced_tokens)
        guess = ""
        if self.lookup_tokens:
            text = self.prompt + self.tokenizer.decode(output) + forced
            guess = lookup(text, self.lookup_tokens * CHARS_PER_TOKEN)
            cap += self.lookup_tokens if guess else 0
        if not cap:
            return Draft()
        tokens = self.encode(forced + guess)[: min(cap, room)]
        return Draft(tokens, min(len(forced_tokens), len(tokens)))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []


class ModelDrafter:
    """Greedy drafts from a smaller model under the same grammar; its cache follows the accepted text."""

    def __init__(self, model, tokens: int, prefill_step_size: int):
        self.model = model
        self.tokens = tokens
        self.prefill_step_size = prefill_step_size
        self.caches: list = []
        self.sequence: list[int] = []

    @property
    def max_tokens(self) -> int:
        return self.tokens

    def start(self, prompt: str, ids: list[int]) -> None:
        self.ids = ids
        self.caches = self.model.make_caches()
        self.sequence = list(ids[:-1])
        for begin in range(0, len(self.sequence), self.prefill_step_size):
            self.model.hidden(mx.array([self.sequence[begin : begin + self.prefill_step_size]]), self.caches)
        mx.eval([cache.state for cache in self.caches])

    def propose(self, constraint: Constraint, output: list[int], room: int) -> Draft:
        target = self.ids + output
        self.catch_up(target)
        count = min(self.tokens, room)
        if count <= 0:
            return Draft()
        pending, tokens = target[len(self.sequence) :], []
        for _ in range(count):
            logits = self.model(mx.array([pending]), self.caches)[:, -1, :]
            self.sequence += pending
            token = mx.argmax(constraint.mask(logits), axis=-1).item()
            if token in constraint.stop_tokens or not constraint.matcher.accept_token(token):
                break
            tokens.append(token)
            pending = [token]
        constraint.rollback(len(tokens))
        return Draft(tokens)

    def catch_up(self, target: list[int]) -> None:
        """Drop the cached positions that the accepted text does not share."""
        shared = 0
        limit = min(len(self.sequence), len(target) - 1)
        while shared < limit and self.sequence[shared] == target[shared]:
            shared += 1
        for cache in self.caches:
            cache.trim(len(self.sequence) - shared)
        self.sequence = self.sequence[:shared]


def lookup(text: str, chars: int) -> str:
    """What followed the latest earlier occurrence of text's longest repeated tail."""
    for size in range(min(MAX_MATCH, len(text) - 1), MIN_MATCH - 1, -1):
        at = text.rfind(text[-size:], 0, len(text) - 1)
        if at >= 0:
            return text[at + size : at + size + chars]
    return ""
