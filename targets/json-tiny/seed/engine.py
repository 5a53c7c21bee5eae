"""Constrained greedy decoding: prefill the prompt, then masked argmax steps.

With a drafter, one step feeds the last token and a draft in one forward, takes the masked argmax at
every position, and keeps the draft up to its first token that greedy decoding would not have
emitted, plus greedy's own token there. The output is the same as one token per step.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

import mlx.core as mx
from drafts import Drafter
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
class Result:
    id: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"


@dataclass
class EngineConfig:
    prefill_step_size: int = 2048
    jump_forward: bool = False
    draft_tokens: int = 0
    compile: bool = False


@dataclass
class Stats:
    forwards: int = 0
    drafted: int = 0
    accepted: int = 0


class Engine:
    def __init__(self, model: Llama, tokenizer, grammars: Grammars, config: EngineConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.grammars = grammars
        self.config = config
        self.stop_tokens = set(grammars.info.stop_token_ids)
        self.drafter = Drafter(tokenizer, config.jump_forward, config.draft_tokens)
        self.stats = Stats()
        self.choose = mx.compile(choose) if config.compile else choose

    def constraint(self, schema: dict) -> Constraint:
        return self.grammars.constraint(schema, self.drafter.max_tokens)

    def generate(self, request: Request) -> Result:
        result = Result(request.id)
        for tokens, finish_reason in self.stream(request.prompt, self.constraint(request.schema), request.max_tokens):
            result.tokens += tokens
            result.finish_reason = finish_reason or result.finish_reason
        result.text = self.tokenizer.decode(result.tokens)
        return result

    def stream(self, prompt: str, constraint: Constraint, max_tokens: int) -> Iterator[tuple[list[int], str | None]]:
        """Yield (new tokens, None) per step, then ([], "stop" or "length")."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        caches = self.model.make_caches()
        self.prefill(ids[:-1], caches)
        token, output = ids[-1], []
        while len(output) < max_tokens:
            room = max_tokens - len(output) - 1
            draft = self.drafter.propose(constraint, prompt, output, room) if self.drafter.max_tokens else []
            new = self.verify(token, draft, caches, constraint) if draft else [self.step(token, caches, constraint)]
            if new[-1] in self.stop_tokens:
                yield new[:-1], "stop"
                return
            constraint.accept(new[-1])
            token = new[-1]
            output += new
            yield new, None
        yield [], "length"

    def prefill(self, tokens: list[int], caches: list) -> None:
        size = self.config.prefill_step_size
        for start in range(0, len(tokens), size):
            self.model.hidden(mx.array([tokens[start : start + size]]), caches)
            mx.eval([(c.keys, c.values) for c in caches])

    def step(self, token: int, caches: list, constraint: Constraint) -> int:
        self.stats.forwards += 1
        logits = self.model(mx.array([[token]]), caches)[:, -1, :]
        return self.choose(constraint.mask(logits)).item()

    def verify(self, token: int, draft: list[int], caches: list, constraint: Constraint) -> list[int]:
        """Greedy's tokens for this step: the accepted draft, then greedy's next token (not yet accepted)."""
        draft = constraint.walk(draft)
        logits = self.model(mx.array([[token, *draft]]), caches)[0]
        chosen = self.choose(constraint.masks(logits, len(draft) + 1)).tolist()
        kept = 0
        while kept < len(draft) and chosen[kept] == draft[kept]:
            kept += 1
        constraint.rollback(len(draft) - kept)
        for cache in caches:
            cache.trim(len(draft) - kept)
        self.stats.forwards += 1
        self.stats.drafted += len(draft)
        self.stats.accepted += kept
        return draft[:kept] + [chosen[kept]]


def choose(logits: mx.array) -> mx.array:
    return mx.argmax(logits, axis=-1)
