"""The stack's knobs: their defaults are read from atelier.knobs.toml beside this file."""

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

KNOBS_FILE = Path(__file__).with_name("atelier.knobs.toml")


@dataclass
class Knobs:
    blas: str = "openblas"
    cfg_stride: int = 1
    siglip: str = "every_branch"
    body_cache: str = "off"
    head_cache: str = "off"
    prefill_trim: str = "off"
    head_bits: str = "none"
    body_bits: str = "none"
    compile: str = "off"
    vae: str = "mlx"

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
