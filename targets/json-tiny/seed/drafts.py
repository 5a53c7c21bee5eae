"""Drafts for one-forward verification: the grammar's forced text, then prompt lookup.

A draft only saves forwards; the engine keeps the tokens that constrained greedy decoding would
have emitted anyway, so a wrong draft costs time, never tokens.
"""

from grammar import Constraint

JUMP_TOKENS = 32
MIN_MATCH = 4
MAX_MATCH = 32
CHARS_PER_TOKEN = 8


class Drafter:
    def __init__(self, tokenizer, jump_forward: bool, lookup_tokens: int):
        self.tokenizer = tokenizer
        self.jump_forward = jump_forward
        self.lookup_tokens = lookup_tokens

    @property
    def max_tokens(self) -> int:
        return (JUMP_TOKENS if self.jump_forward else 0) + self.lookup_tokens

    def propose(self, constraint: Constraint, prompt: str, output: list[int], room: int) -> list[int]:
        if room <= 0 or not self.max_tokens:
            return []
        forced = constraint.forced() if self.jump_forward else ""
        cap = len(self.encode(forced)[:JUMP_TOKENS]) if forced else 0
        guess = ""
        if self.lookup_tokens:
            guess = lookup(prompt + self.tokenizer.decode(output) + forced, self.lookup_tokens * CHARS_PER_TOKEN)
            cap += self.lookup_tokens if guess else 0
        if not cap:
            return []
        return self.encode(forced + guess)[: min(cap, room)]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []


def lookup(text: str, chars: int) -> str:
    """What followed the latest earlier occurrence of text's longest repeated tail."""
    for size in range(min(MAX_MATCH, len(text) - 1), MIN_MATCH - 1, -1):
        at = text.rfind(text[-size:], 0, len(text) - 1)
        if at >= 0:
            return text[at + size : at + size + chars]
    return ""
