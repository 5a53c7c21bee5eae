"""The predicted-outputs workload: editing requests that each carry the file they edit as the predicted output.

A case file (suite/*.json, hidden/*.json) holds an instruction, a file and its language. The request's messages
are the system message SYSTEM and a user message with the instruction and the file (fenced as ```lang when
lang is set); its prediction is the file as the answer would quote it (fenced the same way), which is what a
client that asks for an edit would send. The stack client (Stack, StackError, with one_line and checked_sample) is
the json-tiny one: the same JSON-lines protocol and launch prefix.
"""

import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).absolute().parent))

from json_workload import Stack, StackError, checked_sample, one_line  # noqa: E402

SYSTEM = "Reply with the updated text only."
WARMUP = {"id": "warmup", "prompt": "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n",
          "prediction": "Hi", "max_tokens": 4}  # fmt: skip
__all__ = ["Case", "Stack", "StackError", "WARMUP", "checked_sample", "load_cases", "one_line", "overlap"]


@dataclass
class Case:
    name: str
    instruction: str
    file: str
    lang: str
    max_tokens: int
    prompt: str = ""

    @property
    def prediction(self) -> str:
        return f"```{self.lang}\n{self.file}\n```" if self.lang else self.file

    @property
    def messages(self) -> list[dict]:
        quoted = f"\n```{self.lang}\n{self.file}\n```" if self.lang else f"\n\n{self.file}"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.instruction + quoted}]

    def request(self) -> dict:
        return {"id": self.name, "prompt": self.prompt, "prediction": self.prediction, "max_tokens": self.max_tokens}


def load_cases(folder: Path, model: Path) -> list[Case]:
    """The cases in folder, their prompts rendered with the model's chat template (Qwen3: thinking off)."""
    from transformers import AutoTokenizer

    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json cases in {folder}")
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    cases = []
    for path in files:
        raw = json.loads(path.read_text())
        case = Case(path.stem, raw["instruction"], raw["file"], raw.get("lang", ""), int(raw["max_tokens"]))
        case.prompt = tokenizer.apply_chat_template(
            case.messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        cases.append(case)
    return cases


def overlap(output: list[int], prediction: list[int]) -> float:
    """The share of output tokens that a perfect aligner could take from the prediction: the matching blocks of
    difflib's longest-common-subsequence-like matching, in order, over the output's length."""
    if not output:
        return 0.0
    matcher = difflib.SequenceMatcher(None, output, prediction, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(output)
