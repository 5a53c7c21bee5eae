"""Reference outputs: plain Hugging Face Transformers `generate`, greedy (do_sample=False), one prompt at a time.

The model loads in its checkpoint's dtype (torch_dtype "auto": fp32 for the converted GGUF, bf16 for
Llama-3.1-8B-Instruct), on CUDA when there is one. A chat prompt is the tokenizer's chat template with the
generation prompt, encoded without added special tokens. Decoding stops at a stop token of the generation
config (not included in `tokens`, finish_reason "stop") or after max_tokens tokens ("length"). `gaps` holds,
per step, the reference's top-1 minus top-2 logit: how near a tie each greedy choice was.
"""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class Reference:
    def __init__(self, folder: Path):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto").to(self.device)
        stop = self.model.generation_config.eos_token_id
        self.stop = set(stop) if isinstance(stop, list) else {stop}

    def prompt(self, messages: list) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def generate(self, messages: list, max_tokens: int) -> dict:
        ids = torch.tensor([self.prompt(messages)], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                output_logits=True, return_dict_in_generate=True, pad_token_id=min(self.stop),
            )  # fmt: skip
        tokens, gaps, finish = [], [], "length"
        for token, logits in zip(out.sequences[0, ids.shape[1] :].tolist(), out.logits, strict=True):
            top = logits[0].float().topk(2).values
            gaps.append(float(top[0] - top[1]))
            if token in self.stop:
                finish = "stop"
                break
            tokens.append(token)
        return {"tokens": tokens, "text": self.tokenizer.decode(tokens), "finish_reason": finish, "gaps": gaps}
