"""Constrained greedy decoding: prefill the prompt, then masked argmax steps.

With a drafter, one step feeds the last token and a draft in one forward, takes the masked argmax at
every position, and keeps the draft up to its first token that greedy decoding would not have
emitted, plus greedy's own token there. The output is the same as one token per step.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import mlx.core as mx
from drafts import Draft, Drafter
from grammar import Constraint, Grammars
from model import Llama


@dataclass
class Request:
    id: str
    prompt: str
    schema: dict
    max_tokens: int

    @classmethod
    def from_dict(cls, raw: dict) -> "Request":
        return cls(str(raw["id"]), raw["prompt"], raw["schema"], int(raw["max_tokens"]))


@dataclass
class Stats:
    forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    jump_forward: int = 0


@dataclass
class Result:
    id: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    ttft_s: float = 0.0
    stats: Stats = field(default_factory=Stats)


@dataclass
class EngineConfig:
    prefill_step_size: int = 2048
    jump_forward: bool = False
    draft_tokens: int = 0
    compile: bool = False
    prompt_cache: bool = False
    kv_bits: int = 0
    sparse_head: int = 0


class Engine:
    def __init__(self, model: Llama, tokenizer, grammars: Grammars, config: EngineConfig, drafter=None):
        self.model = model
        self.tokenizer = tokenizer
        self.grammars = grammars
        self.config = config
        self.stop_tokens = set(grammars.info.stop_token_ids)
        self.drafter = drafter or Drafter(tokenizer, config.jump_forward, config.draft_tokens)
        self.stats = Stats()
        self.choose = mx.compile(choose) if config.compile else choose
        self.cached: list[int] = []
        self.caches: list = []

    def constraint(self, schema: dict) -> Constraint:
        return self.grammars.constraint(schema, self.drafter.max_tokens)

    def generate(self, request: Request) -> Result:
        started = time.perf_counter()
        result = Result(request.id)
        before = Stats(**vars(self.stats))
        for tokens, finish_reason in self.stream(request.prompt, self.constraint(request.schema), request.max_tokens):
            if not result.ttft_s:
                result.ttft_s = time.perf_counter() - started
            result.tokens += tokens
            result.finish_reason = finish_reason or result.finish_reason
        result.text = self.tokenizer.decode(result.tokens)
        result.stats = Stats(**{k: v - getattr(before, k) for k, v in vars(self.stats).items()})
        return result

    def stream(self, prompt: str, constraint: Constraint, max_tokens: int) -> Iterator[tuple[list[int], str | None]]:
        """Yield (new tokens, None) per step, then ([], "stop" or "length")."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        caches = self.start(ids[:-1])
        self.drafter.start(prompt, ids)
        token, output = ids[-1], []
        while len(output) < max_tokens:
            room = max_tokens - len(output) - 1
            draft = self.drafter.propose(constraint, output, room) if self.drafter.max_tokens else Draft()
            new = (
                self.verify(token, draft, caches, constraint)
                if draft.tokens
                else [self.step(token, caches, constraint)]
            )
            if new[-1] in self.stop_tokens:
                yield new[:-1], "stop"
                return
            constraint.accept(new[-1])
            token = new[-1]
            output += new
            yield new, None
        yield [], "length"

    def start(self, prompt: list[int]) -> list:
        """Caches holding the prompt's keys and values; with prompt_cache, the last prompt's shared prefix is kept."""
        shared = 0
        if self.config.prompt_cache:
            limit = min(len(self.cached), len(prompt))
            while shared < limit and self.cached[shared] == prompt[shared]:
                shared += 1
        if shared:
            for cache in self.caches:
                cache.trim(cache.offset - shared)
        else:
            self.caches = self.model.make_caches(self.config.kv_bits)
        self.prefill(prompt[shared:], self.caches)
        self.cached = list(prompt)
        return self.caches

    def prefill(self, tokens: list[int], caches: list) -> None:
        size = self.config.prefill_step_size
        for start in range(0, len(tokens), size):
            self.model.hidden(mx.array([tokens[start : start + size]]), caches)
            mx.eval([cache.state for cache in caches])

    def step(self, token: int, caches: list, constraint: Constraint) -> int:
        self.stats.forwards += 1
        hidden = self.model.hidden(mx.array([[token]]), caches)[0]
        constraint.fill()
        return self.argmax(hidden, constraint, 1).item()

    def verify(self, token: int, draft: Draft, caches: list, constraint: Constraint) -> list[int]:
        """Greedy's tokens for this step: the accepted draft, then greedy's next token (not yet accepted)."""
        tokens = constraint.walk(draft.tokens)
        hidden = self.model.hidden(mx.array([[token, *tokens]]), caches)[0]
        chosen = self.argmax(hidden, constraint, len(tokens) + 1).tolist()
        kept = 0
        while kept < len(tokens) and chosen[kept] == tokens[kept]:
            kept += 1
        constraint.rollback(len(tokens) - kept)
        for cache in caches:
            cache.trim(len(tokens) - kept)
        self.stats.forwards += 1
        self.stats.drafted += len(tokens)
        self.stats.accepted += kept
        self.stats.jump_forward += min(kept, draft.forced)
        return tokens[:kept] + [chosen[kept]]

    def argmax(self, hidden: mx.array, constraint: Constraint, rows: int) -> mx.array:
        """The masked argmax per row; with sparse_head, logits only for the tokens some row allows."""
        allowed = constraint.allowed(rows) if self.config.sparse_head else None
        if allowed is None or len(allowed) > self.config.sparse_head:
            return self.choose(constraint.masks(self.model.logits(hidden), rows))
        ids = mx.array(allowed)
        logits = self.model.logits_for(hidden, ids)
        return ids[self.choose(mx.where(constraint.dense_masks(rows, allowed), logits, -mx.inf))]


def choose(logits: mx.array) -> mx.array:
    return mx.argmax(logits, axis=-1)
