"""Constrained greedy decoding: prefill the prompt, then one masked argmax per step."""

from dataclasses import dataclass, field

import mlx.core as mx
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


class Engine:
    def __init__(self, model: Llama, tokenizer, grammars: Grammars, config: EngineConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.grammars = grammars
        self.config = config
        self.stop_tokens = set(grammars.info.stop_token_ids)

    def generate(self, request: Request) -> Result:
        prompt = self.tokenizer.encode(request.prompt, add_special_tokens=False)
        constraint = self.grammars.constraint(request.schema)
        caches = self.model.make_caches()
        self.prefill(prompt[:-1], caches)
        result = Result(request.id)
        token = prompt[-1]
        while len(result.tokens) < request.max_tokens:
            token = self.step(token, caches, constraint)
            if token in self.stop_tokens:
                result.finish_reason = "stop"
                break
            constraint.accept(token)
            result.tokens.append(token)
        result.text = self.tokenizer.decode(result.tokens)
        return result

    def prefill(self, tokens: list[int], caches: list) -> None:
        size = self.config.prefill_step_size
        for start in range(0, len(tokens), size):
            self.model.hidden(mx.array([tokens[start : start + size]]), caches)
            mx.eval([(c.keys, c.values) for c in caches])

    def step(self, token: int, caches: list, constraint: Constraint) -> int:
        logits = self.model(mx.array([[token]]), caches)[:, -1, :]
        return mx.argmax(constraint.mask(logits), axis=-1).item()
