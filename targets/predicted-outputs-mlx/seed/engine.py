"""Greedy decoding with mlx-lm's model and KV cache, optionally verifying the request's predicted output k tokens
per forward."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx_lm import load as load_mlx
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache
from mlx_lm.utils import dequantize_model
from prediction import Prediction

PREFILL_STEP = 2048


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


def load(folder: Path, weights: str = "quantized"):
    """The mlx-lm model (as shipped, or dequantized to dense fp32), its Hugging Face tokenizer and stop tokens."""
    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"not an mlx-lm model folder (no config.json): {folder}")
    model, wrapper = load_mlx(str(folder))
    if weights == "fp32":
        for _, module in model.named_modules():
            if isinstance(module, nn.QuantizedLinear | nn.QuantizedEmbedding):
                module.scales = module.scales.astype(mx.float32)
                module.biases = module.biases.astype(mx.float32)
        model = dequantize_model(model)
        mx.eval(model.parameters())
    return model, wrapper._tokenizer, set(wrapper.eos_token_ids)


class Engine:
    def __init__(self, model, tokenizer, stops: set[int], config: EngineConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.stops = stops
        self.config = config

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

    def stream(self, prompt: str, prediction: str, max_tokens: int, stats: Stats | None = None):
        """Yield (new tokens, finish_reason or None); the stop token is not yielded. The prompt is prefilled but
        for its last token, which the first step computes together with the first predicted tokens."""
        stats = stats or Stats()
        ids = self.encode(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        cache = make_prompt_cache(self.model)
        self.prefill(ids[:-1], cache, stats)
        predicted = Prediction(self.encode(prediction), self.config.realign) if self.config.predicted else None
        stats.predicted = len(predicted.tokens) if predicted else 0
        output: list[int] = []
        last, finish = ids[-1], None
        while not finish:
            room = min(self.config.k, max_tokens - len(output) - 1)
            draft = predicted.draft(output, room) if predicted else []
            greedy = self.forward([last, *draft], cache, stats)
            n = next((i for i, d in enumerate(draft) if greedy[i] != d), len(draft))
            stats.drafted += len(draft)
            stats.accepted += n
            trim_prompt_cache(cache, len(draft) - n)
            new, finish = self.emit([*draft[:n], greedy[n]], output, predicted, max_tokens)
            last = greedy[n]
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

    def prefill(self, ids: list[int], cache: list, stats: Stats) -> None:
        for start in range(0, len(ids), PREFILL_STEP):
            stats.forwards += 1
            self.model(mx.array([ids[start : start + PREFILL_STEP]]), cache=cache)
            mx.eval([c.state for c in cache])

    def forward(self, ids: list[int], cache: list, stats: Stats) -> list[int]:
        """The greedy next token after each position of ids: the argmax of the log-probabilities, as mlx-lm's
        greedy sampler takes it."""
        stats.forwards += 1
        logits = self.model(mx.array([ids]), cache=cache)[0]
        return mx.argmax(logits - mx.logsumexp(logits, axis=-1, keepdims=True), axis=-1).tolist()
