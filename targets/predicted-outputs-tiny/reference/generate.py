"""Reference outputs: greedy decoding (temperature 0) with Hugging Face transformers' generate.

The model loads in its folder's own dtype (fp32 for the converted SmolLM2, bf16 for Qwen3) on CUDA when there
is one, else the CPU. The prompt text is encoded without added special tokens; decoding stops at an
end-of-sequence token of the folder's generation config (not included in `tokens`, finish_reason "stop") or
after max_tokens tokens ("length"). `text` is the tokenizer's decoding of `tokens`. Extra generate options
(prompt_lookup_num_tokens, assistant_model) serve `atelier bench predicted`'s comparison rows, never the checker.
"""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig


class Reference:
    def __init__(self, model_dir: Path):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto", device_map=self.device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.stops = eos if isinstance(eos, list) else [eos]

    def generate(self, prompt: str, max_tokens: int, **options) -> dict:
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=self.stops,
                                  pad_token_id=self.stops[0])  # fmt: skip
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, **options)
        tokens, finish = out[0, ids.shape[1] :].tolist(), "length"
        if tokens and tokens[-1] in self.stops:
            tokens, finish = tokens[:-1], "stop"
        return {"tokens": tokens, "text": self.tokenizer.decode(tokens), "finish_reason": finish}
