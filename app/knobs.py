from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

FILE = "atelier.knobs.toml"


class KnobError(Exception):
    pass


@dataclass
class Knob:
    name: str
    values: list[Any]
    default: Any
    help: str = ""


def read(workspace: Path) -> list[Knob]:
    path = workspace / FILE
    if not path.exists():
        return []
    try:
        doc = tomlkit.parse(path.read_text()).unwrap()
    except tomlkit.exceptions.TOMLKitError as e:
        raise KnobError(f"{path}: {e}") from e
    knobs = []
    for name, spec in doc.items():
        if not isinstance(spec, dict) or "values" not in spec or "default" not in spec:
            raise KnobError(f"{path}: knob '{name}' needs a table with 'values' and 'default'")
        if spec["default"] not in spec["values"]:
            raise KnobError(f"{path}: knob '{name}' default {spec['default']!r} is not among its values")
        knobs.append(Knob(name, list(spec["values"]), spec["default"], spec.get("help", "")))
    return knobs


def settings(workspace: Path) -> dict[str, Any]:
    return {k.name: k.default for k in read(workspace)}


def set_default(workspace: Path, name: str, value: Any) -> None:
    path = workspace / FILE
    doc = tomlkit.parse(path.read_text())
    if name not in doc:
        raise KnobError(f"{path}: no knob '{name}'")
    doc[name]["default"] = value  # type: ignore[index]
    path.write_text(tomlkit.dumps(doc))
