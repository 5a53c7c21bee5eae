"""Greedy decoding with its own KV cache, optionally verifying the request's predicted output k tokens per forward."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from prediction import Prediction
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache


@dataclass
class Request:
    id: str
    prompt: str
    prediction: str = ""
    max_tokens: int = 256

    @classmethod
    def from_dict(cls, raw: dict) -> "Request":
        return cls(str(raw["id"]), raw["prompt"], raw.get("prediction") or "", int(raw["max_tokens"]))


@dataclass
class Stats:
    forwards: int = 0
    predicted: int = 0
    drafted: int = 0
    accepted: int = 0


@dataclass
class Result:
    id: str
    tokens: list[int]
    text: str
    finish_reason: str
    ttft_s: float
    stats: Stats = field(default_factory=Stats)


@dataclass
class EngineConfig:
    predicted: bool = False
    k: int = 8
    realign: bool = True


def load(folder: Path, dtype: str, attention: str):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype="auto" if dtype == "auto" else getattr(torch, dtype), attn_implementation=attention,
        device_map=device,
    )  # fmt: skip
    return model.eval(), AutoTokenizer.from_pretrained(str(folder))


def stop_tokens(model, tokenizer) -> set[int]:
    """The end-of-sequence tokens of the model folder's generation config, as the reference stops on."""
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos) if isinstance(eos, list) else {eos}


class Engine:
    def __init__(self, model, tokenizer, stops: set[int], config: EngineConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.stops = stops
        self.config = config
        self.device = next(model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def generate(self, request: Request) -> Result:
        started = time.perf_counter()
        tokens, finish, ttft, stats = [], "length", 0.0, Stats()
        for new, finish_reason in self.stream(request.prompt, request.prediction, request.max_tokens, stats):
            ttft = ttft or time.perf_counter() - started
            tokens += new
            finish = finish_reason or finish
        return Result(request.id, tokens, self.tokenizer.decode(tokens), finish, ttft, stats)

    @torch.inference_mode()
    def stream(self, prompt: str, prediction: str, max_tokens: int, stats: Stats | None = None):
        """Yield (new tokens, finish_reason or None); the stop token is not yielded."""
        stats = stats or Stats()
        cache = DynamicCache(config=self.model.config)
        predicted = Prediction(self.encode(prediction), self.config.realign) if self.config.predicted else None
        stats.predicted = len(predicted.tokens) if predicted else 0
        output: list[int] = []
        new, finish = self.emit(self.forward(self.encode(prompt), cache, stats), output, predicted, max_tokens)
        yield new, finish
        while not finish:
            room = min(self.config.k, max_tokens - len(output) - 1)
            draft = predicted.draft(output, room) if predicted else []
            greedy = self.forward([output[-1], *draft], cache, stats)
            n = next((i for i, d in enumerate(draft) if greedy[i] != d), len(draft))
            stats.drafted += len(draft)
            stats.accepted += n
            if n < len(draft):
                cache.crop(n - len(draft))
            new, finish = self.emit([*draft[:n], greedy[n]], output, predicted, max_tokens)
            yield new, finish

    def emit(self, tokens: list[int], output: list[int], predicted: Prediction | None, max_tokens: int):
        """Append tokens to output up to a stop token or max_tokens; the tokens taken and the finish reason."""
        new = []
        for token in tokens:
            if token in self.stops:
                return new, "stop"
            output.append(token)
            new.append(token)
            if predicted:
                predicted.follow(token)
            if len(output) >= max_tokens:
                return new, "length"
        return new, None

    def forward(self, ids: list[int], cache: DynamicCache, stats: Stats) -> list[int]:
        """The greedy next token after each position of ids (after the last one only, for a prefill)."""
        stats.forwards += 1
        keep = len(ids) if cache.get_seq_length() else 1
        out = self.model(torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=keep)  # fmt: skip
        return out.logits[0].argmax(-1).tolist()
