"""Reference outputs: greedy decoding (temperature 0) with plain mlx-lm on the model as shipped (4-bit as loaded).

The prompt text is encoded without added special tokens and decoded by mlx-lm's `generate_step` with its greedy
sampler (the argmax of the log-probabilities; the prompt prefilled but for its last token, which the first
step computes). Decoding stops at one of the tokenizer's end-of-sequence tokens (not included in `tokens`,
finish_reason "stop") or after max_tokens tokens ("length"). `text` is the tokenizer's decoding of `tokens`.
"""

from pathlib import Path

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import generate_step


class Reference:
    def __init__(self, model_dir: Path):
        self.model, wrapper = load(str(model_dir))
        self.tokenizer = wrapper._tokenizer
        self.stops = set(wrapper.eos_token_ids)

    def generate(self, prompt: str, max_tokens: int) -> dict:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        tokens, finish = [], "length"
        for token, _ in generate_step(mx.array(ids), self.model, max_tokens=max_tokens):
            if int(token) in self.stops:
                finish = "stop"
                break
            tokens.append(int(token))
        return {"tokens": tokens, "text": self.tokenizer.decode(tokens), "finish_reason": finish}
