"""The stack's knobs: their defaults are read from atelier.knobs.toml beside this file."""

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

KNOBS_FILE = Path(__file__).with_name("atelier.knobs.toml")


@dataclass
class Knobs:
    weights: str
    scale_dtype: str
    blas: str
    jump_forward: str = "off"
    draft: str = "none"
    draft_tokens: int = 4
    compile: str = "off"
    sparse_head: str = "off"
    prompt_cache: str = "off"
    prefill_step_size: int = 2048
    kv_cache: str = "full"

    @classmethod
    def read(cls, path: Path = KNOBS_FILE) -> "Knobs":
        table = tomllib.loads(path.read_text())
        values = {}
        for knob in fields(cls):
            entry = table[knob.name]
            if entry["default"] not in entry["values"]:
                raise ValueError(f"knob {knob.name}: default {entry['default']!r} is not in its values")
            values[knob.name] = entry["default"]
        return cls(**values)
