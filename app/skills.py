"""The skills library: Agent Skills folders (skills/<layer>/<name>/SKILL.md) and their checks."""

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1] / "skills"
LAYERS = ("models", "algorithms", "frameworks", "backends", "hardware", "engines", "tooling")
BACKENDS = ("mlx", "cuda", "any")
FIELDS = ("name", "description", "license", "compatibility", "allowed-tools", "metadata")
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_COMPATIBILITY = 500


@dataclass
class Skill:
    name: str
    description: str
    layer: str
    path: Path
    backends: list[str] = field(default_factory=list)
    body: str = ""


class FrontMatterError(ValueError):
    pass


def split_front_matter(text: str) -> tuple[dict, str]:
    """The YAML mapping between the opening and closing '---' lines, and the body after them."""
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise FrontMatterError("no front matter: the file must start with a '---' line")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise FrontMatterError("front matter is not closed by a '---' line")
    try:
        data = yaml.safe_load("".join(lines[1:end]))
    except yaml.YAMLError as e:
        raise FrontMatterError(f"front matter is not valid YAML: {one_line(e)}") from e
    if not isinstance(data, dict):
        raise FrontMatterError("front matter is not a YAML mapping")
    return data, "".join(lines[end + 1 :])


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def backends_of(data: dict) -> list[str]:
    """metadata.backends as a list; a YAML list or a space/comma separated string."""
    meta = data.get("metadata")
    value = meta.get("backends") if isinstance(meta, dict) else None
    if isinstance(value, str):
        return [b for b in re.split(r"[\s,]+", value) if b]
    if isinstance(value, list):
        return [str(b) for b in value]
    return []


def skill_files(root: Path) -> list[Path]:
    return sorted(root.rglob("SKILL.md"))


def load_skills(root: Path = ROOT) -> list[Skill]:
    """Every skill whose front matter parses; validate_skills reports the rest."""
    skills = []
    for path in skill_files(root):
        try:
            data, body = split_front_matter(path.read_text(encoding="utf-8"))
        except (FrontMatterError, UnicodeDecodeError):
            continue
        skills.append(
            Skill(
                name=str(data.get("name", path.parent.name)),
                description=str(data.get("description", "")).strip(),
                layer=path.parent.parent.name,
                path=path,
                backends=backends_of(data) or ["any"],
                body=body,
            )
        )
    return skills


def validate_skills(root: Path = ROOT) -> list[str]:
    """One line per problem, each naming the file."""
    if not root.is_dir():
        return [f"{root}: skills folder not found"]
    problems = []
    for path in skill_files(root):
        problems += [f"{path}: {p}" for p in check_file(path, root)]
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        if not (folder / "SKILL.md").is_file():
            problems.append(f"{folder}: skill folder has no SKILL.md")
    seen: dict[str, Path] = {}
    for path in sorted(root.glob("*/*/SKILL.md")):
        name = path.parent.name
        if name in seen:
            problems.append(f"{path}: skill name '{name}' is also used by {seen[name]}")
        seen.setdefault(name, path)
    return problems


def check_file(path: Path, root: Path) -> list[str]:
    parts = path.relative_to(root).parts
    if len(parts) != 3:
        return ["not at skills/<layer>/<name>/SKILL.md"]
    try:
        data, body = split_front_matter(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return ["not UTF-8 text"]
    except FrontMatterError as e:
        return [str(e)]
    problems = []
    if parts[0] not in LAYERS:
        problems.append(f"unknown layer '{parts[0]}' (expected one of: {', '.join(LAYERS)})")
    problems += check_name(data.get("name"), parts[1])
    problems += check_description(data.get("description"))
    problems += check_optional(data)
    problems += check_backends(data)
    if not body.strip():
        problems.append("body is empty")
    return problems


def check_name(name, folder: str) -> list[str]:
    if name is None:
        return ["name is missing"]
    if not isinstance(name, str) or not name:
        return ["name must be a non-empty string"]
    problems = []
    if len(name) > MAX_NAME:
        problems.append(f"name is {len(name)} characters (max {MAX_NAME})")
    if not NAME.match(name):
        problems.append(f"name '{name}' must use only lowercase letters, digits and single hyphens, not at either end")
    if name != folder:
        problems.append(f"name '{name}' does not match its folder '{folder}'")
    return problems


def check_description(description) -> list[str]:
    if description is None:
        return ["description is missing"]
    if not isinstance(description, str) or not description.strip():
        return ["description must be a non-empty string"]
    if len(description) > MAX_DESCRIPTION:
        return [f"description is {len(description)} characters (max {MAX_DESCRIPTION})"]
    return []


def check_optional(data: dict) -> list[str]:
    problems = [f"unknown front matter field '{k}'" for k in data if k not in FIELDS]
    for key in ("license", "allowed-tools"):
        if key in data and not isinstance(data[key], str):
            problems.append(f"{key} must be a string")
    compat = data.get("compatibility")
    if compat is not None and (not isinstance(compat, str) or len(compat) > MAX_COMPATIBILITY):
        problems.append(f"compatibility must be a string of at most {MAX_COMPATIBILITY} characters")
    if "metadata" in data and not isinstance(data["metadata"], dict):
        problems.append("metadata must be a mapping")
    return problems


def check_backends(data: dict) -> list[str]:
    meta = data.get("metadata")
    if not isinstance(meta, dict) or "backends" not in meta:
        return ["metadata.backends is missing (one or more of: mlx, cuda, any)"]
    value = meta["backends"]
    if not isinstance(value, (str, list)):
        return ["metadata.backends must be a list or a space-separated string"]
    found = backends_of(data)
    if not found:
        return ["metadata.backends is empty"]
    return [f"unknown backend '{b}' (expected: {', '.join(BACKENDS)})" for b in found if b not in BACKENDS]


def skills_for(backend: str, skills: list[Skill]) -> list[Skill]:
    """Skills that apply to this backend: those listing it, or 'any'."""
    return [s for s in skills if backend in s.backends or "any" in s.backends]
