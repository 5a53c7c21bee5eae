from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from backends.platform import PLATFORMS

FILE = "atelier.knobs.toml"


class KnobError(Exception):
    pass


@dataclass
class Knob:
    name: str
    values: list[Any]
    default: Any
    help: str = ""
    when: dict[str, list[Any]] = field(default_factory=dict)
    platforms: list[str] = field(default_factory=list)

    def acts_on(self, platform: str) -> bool:
        """Whether the knob can change anything on this platform (every platform when it names none)."""
        return not self.platforms or platform in self.platforms

    def active(self, setting: dict[str, Any]) -> bool:
        """Whether the knob acts under this setting: each knob it names has one of the listed values."""
        return all(setting.get(name) in values for name, values in self.when.items())


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
        when = {k: v if isinstance(v, list) else [v] for k, v in spec.get("when", {}).items()}
        platforms = _platforms(path, name, spec.get("platforms", []))
        knobs.append(Knob(name, list(spec["values"]), spec["default"], spec.get("help", ""), when, platforms))
    _check_when(path, knobs)
    return knobs


def _platforms(path: Path, name: str, declared) -> list[str]:
    declared = declared if isinstance(declared, list) else [declared]
    unknown = [p for p in declared if p not in PLATFORMS]
    if unknown:
        raise KnobError(f"{path}: knob '{name}' platforms {unknown!r}: expected some of {', '.join(PLATFORMS)}")
    return declared


def _check_when(path: Path, knobs: list[Knob]) -> None:
    values = {k.name: k.values for k in knobs}
    for knob in knobs:
        for name, wanted in knob.when.items():
            if name not in values or name == knob.name:
                raise KnobError(f"{path}: knob '{knob.name}' is active 'when' an unknown knob '{name}'")
            if not wanted or any(v not in values[name] for v in wanted):
                raise KnobError(f"{path}: knob '{knob.name}' 'when' {name} = {wanted!r}: not among its values")


def settings(workspace: Path) -> dict[str, Any]:
    return {k.name: k.default for k in read(workspace)}


def set_default(workspace: Path, name: str, value: Any) -> None:
    path = workspace / FILE
    doc = tomlkit.parse(path.read_text())
    if name not in doc:
        raise KnobError(f"{path}: no knob '{name}'")
    doc[name]["default"] = value  # type: ignore[index]
    path.write_text(tomlkit.dumps(doc))
