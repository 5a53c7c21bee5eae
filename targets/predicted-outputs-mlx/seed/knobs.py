"""The stack's knobs: their defaults are read from atelier.knobs.toml beside this file."""

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

KNOBS_FILE = Path(__file__).with_name("atelier.knobs.toml")


@dataclass
class Knobs:
    predicted: str = "off"
    k: int = 8
    realign: str = "ngram"
    weights: str = "quantized"
    blas: str = "bundled"

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
