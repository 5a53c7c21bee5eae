import shlex
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from app.store import gain

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "targets"
EXECUTORS = ("mlx", "local", "cuda_remote")
PLACEHOLDERS = {"python", "workspace", "readonly", "inputs", "model", "draft", "cache", "serve"}
SERVE_PLACEHOLDERS = {"python", "model", "draft"}
APIS = ("openai",)  # what a stack's serve command may speak; absent: no server the Judge checks
MODEL_SOURCES = ("path", "hub", "package")

TOP_KEYS = {
    "name",
    "description",
    "executor",
    "instructions",
    "seed",
    "serve",
    "api",
    "model",
    "readonly",
    "checker",
    "benchmark",
}
SECTION_KEYS = {
    "model": {"path", "hub", "package", "draft"},
    "readonly": {"paths", "hidden"},
    "checker": {"command", "inputs", "timeout"},
    "benchmark": {"command", "inputs", "metric", "direction", "repeats", "timeout"},
}


class TargetError(Exception):
    pass


@dataclass
class Model:
    path: str = ""
    hub: str = ""
    package: str = ""
    draft: dict = field(default_factory=dict)


@dataclass
class Checker:
    command: str
    inputs: str
    timeout: float = 900


@dataclass
class Benchmark:
    command: str
    inputs: str
    metric: str
    direction: str = "lower"
    repeats: int = 3
    timeout: float = 600

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "lower" else a > b

    def gain(self, candidate: float, incumbent: float) -> float:
        return gain(candidate, incumbent, self.direction)


@dataclass
class Target:
    dir: Path
    name: str
    description: str
    executor: str
    instructions: str
    seed: str
    model: Model
    readonly: list[str]
    hidden: list[str]
    checker: Checker
    benchmark: Benchmark
    serve: str = ""
    api: str = ""  # "openai": serve starts an OpenAI-compatible server, which the Judge checks through {serve}

    @property
    def objective(self) -> str:
        return (self.dir / self.instructions).read_text()

    def serve_line(self, python: str, model: str, draft: str | None) -> str:
        """The serve line as a shell command: python a shell word as it stands (`"$PYTHON"` in an export's run.sh,
        a quoted path elsewhere); model and draft paths, quoted."""
        return self.serve.format(python=python, model=shlex.quote(model), draft=shlex.quote(draft) if draft else "''")


def find(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if (path / "target.toml").exists():
        return path.resolve()
    if (BUNDLED / name_or_path / "target.toml").exists():
        return BUNDLED / name_or_path
    raise TargetError(f"{name_or_path}: no target.toml here or among the bundled targets ({BUNDLED})")


def bundled() -> list[Path]:
    return sorted(p.parent for p in BUNDLED.glob("*/target.toml"))


def load(name_or_path: str) -> Target:
    problems, target = check(find(name_or_path))
    if problems:
        raise TargetError("; ".join(problems))
    assert target is not None
    return target


def check(dir: Path) -> tuple[list[str], Target | None]:
    """Every problem with the bundle, each naming the key or file; the Target when there are none."""
    file = dir / "target.toml"
    try:
        raw = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return [f"{file}: {e}"], None
    problems = _unknown_keys(file, raw)
    problems += _missing_keys(file, raw)
    if problems:
        return problems, None
    target = _build(dir, raw)
    problems += _bad_values(file, target)
    problems += _missing_files(target)
    problems += _bad_commands(file, target)
    problems += _bad_server(file, target)
    return problems, None if problems else target


def _unknown_keys(file: Path, raw: dict) -> list[str]:
    problems = [f"{file}: unknown key '{k}'" for k in raw if k not in TOP_KEYS]
    for section, allowed in SECTION_KEYS.items():
        value = raw.get(section, {})
        if not isinstance(value, dict):
            problems.append(f"{file}: [{section}] must be a table")
            continue
        problems += [f"{file}: unknown key '{section}.{k}'" for k in value if k not in allowed]
    return problems


def _missing_keys(file: Path, raw: dict) -> list[str]:
    required = ["name", "executor", "instructions", "seed", "model", "readonly", "checker", "benchmark"]
    problems = [f"{file}: missing key '{k}'" for k in required if k not in raw]
    for section, keys in {"checker": ["command", "inputs"], "benchmark": ["command", "inputs", "metric"]}.items():
        problems += [f"{file}: missing key '{section}.{k}'" for k in keys if k not in raw.get(section, {})]
    if "readonly" in raw and "paths" not in raw["readonly"]:
        problems.append(f"{file}: missing key 'readonly.paths'")
    return problems


def _build(dir: Path, raw: dict) -> Target:
    return Target(
        dir=dir.resolve(),
        name=raw["name"],
        description=raw.get("description", ""),
        executor=raw["executor"],
        instructions=raw["instructions"],
        seed=raw["seed"],
        model=Model(**raw["model"]),
        readonly=list(raw["readonly"]["paths"]),
        hidden=list(raw["readonly"].get("hidden", [])),
        checker=Checker(**raw["checker"]),
        benchmark=Benchmark(**raw["benchmark"]),
        serve=raw.get("serve", ""),
        api=raw.get("api", ""),
    )


def executor_problem(spec: str) -> str:
    """What is wrong with an executor spec (KIND or cuda_remote:NAME), or '' when nothing is."""
    kind, colon, name = spec.partition(":")
    if kind not in EXECUTORS:
        return f"executor '{spec}' is not one of {', '.join(EXECUTORS)}"
    if colon and (kind != "cuda_remote" or not name):
        return f"executor '{spec}': only cuda_remote takes a name, as 'cuda_remote:NAME'"
    return ""


def _bad_values(file: Path, t: Target) -> list[str]:
    problems = [f"{file}: {p}" for p in [executor_problem(str(t.executor))] if p]
    sources = [k for k in MODEL_SOURCES if getattr(t.model, k)]
    if len(sources) != 1:
        problems.append(f"{file}: [model] needs exactly one of path, hub, package (has {sources or 'none'})")
    problems += _bad_draft(file, t.model.draft)
    if t.benchmark.direction not in ("lower", "higher"):
        problems.append(f"{file}: benchmark.direction must be 'lower' or 'higher', not '{t.benchmark.direction}'")
    if not isinstance(t.benchmark.repeats, int) or t.benchmark.repeats < 1:
        problems.append(f"{file}: benchmark.repeats must be a whole number ≥ 1")
    for section in (t.checker, t.benchmark):
        if not isinstance(section.timeout, int | float) or section.timeout <= 0:
            problems.append(f"{file}: timeout must be a positive number of seconds")
    for name, inputs in (("checker", t.checker.inputs), ("benchmark", t.benchmark.inputs)):
        if inputs not in t.readonly:
            problems.append(f"{file}: {name}.inputs '{inputs}' must be one of readonly.paths")
    return problems


def _bad_draft(file: Path, draft) -> list[str]:
    if not isinstance(draft, dict):
        return [f"{file}: [model.draft] must be a table with one of path, hub, package"]
    if not draft:
        return []
    problems = [f"{file}: unknown key 'model.draft.{k}'" for k in draft if k not in MODEL_SOURCES]
    if not problems and len([k for k in MODEL_SOURCES if draft.get(k)]) != 1:
        problems.append(f"{file}: [model.draft] needs exactly one of path, hub, package")
    return problems


def _missing_files(t: Target) -> list[str]:
    names = [t.instructions, t.seed, *t.readonly, *t.hidden]
    problems = [f"{t.dir / n}: missing file (named in target.toml)" for n in names if not (t.dir / n).exists()]
    if (t.dir / t.seed).exists() and not (t.dir / t.seed).is_dir():
        problems.append(f"{t.dir / t.seed}: seed must be a folder")
    return problems


def _bad_commands(file: Path, t: Target) -> list[str]:
    problems = []
    for name, command in (("checker.command", t.checker.command), ("benchmark.command", t.benchmark.command)):
        try:
            words = shlex.split(command)
        except ValueError as e:
            problems.append(f"{file}: {name} does not parse: {e}")
            continue
        if not words:
            problems.append(f"{file}: {name} is empty")
        unknown = _placeholders(command) - PLACEHOLDERS
        problems += [f"{file}: {name} uses unknown placeholder {{{p}}}" for p in sorted(unknown)]
        problems += _missing_scripts(t, name, words)
    return problems


def _placeholders(command: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(command) if f is not None}


def _missing_scripts(t: Target, name: str, words: list[str]) -> list[str]:
    problems = []
    for word in words:
        if word.startswith("{readonly}/"):
            rel = word.removeprefix("{readonly}/")
            if rel.split("/")[0] not in t.readonly:
                problems.append(f"{name}: '{rel}' is not among readonly.paths")
            elif not (t.dir / rel).exists():
                problems.append(f"{t.dir / rel}: missing file (used by {name})")
    return problems


def _bad_server(file: Path, t: Target) -> list[str]:
    """serve must be a command line over {python}, {model}, {draft}; api = "openai" says it starts an OpenAI server,
    which the Judge checks: then the checker must receive it as {serve}, and only then may a command use {serve}."""
    if not isinstance(t.serve, str):
        return [f"{file}: serve must be a command line (a string)"]
    if not isinstance(t.api, str) or (t.api and t.api not in APIS):
        return [f"{file}: api must be one of {', '.join(repr(a) for a in APIS)} or absent, not {t.api!r}"]
    problems = []
    try:
        unknown = _placeholders(t.serve) - SERVE_PLACEHOLDERS
        allowed = "it may use {python}, {model}, {draft}"
        problems += [f"{file}: serve uses unknown placeholder {{{p}}} ({allowed})" for p in sorted(unknown)]
        shlex.split(t.serve)
    except ValueError as e:
        problems.append(f"{file}: serve does not parse: {e}")
    commands = (("checker.command", t.checker.command), ("benchmark.command", t.benchmark.command))
    uses = [name for name, command in commands if "serve" in _safe_placeholders(command)]
    if t.api and not t.serve:
        problems.append(f"{file}: api = {t.api!r} needs serve, the command that starts the stack's server")
    if t.api and "checker.command" not in uses:
        problems.append(
            f"{file}: api = {t.api!r}: checker.command must pass the server's command as {{serve}} "
            "(e.g. --serve {serve}): the Judge checks the stack through its server"
        )
    if not t.api:
        problems += [f"{file}: {name} uses {{serve}}, which only a target with api = 'openai' has" for name in uses]
    return problems


def _safe_placeholders(command) -> set[str]:
    try:
        return _placeholders(command)
    except (ValueError, TypeError, AttributeError):
        return set()
