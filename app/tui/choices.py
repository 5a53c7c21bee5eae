"""What the launch form offers besides the target: the executors and the LLM endpoints the Atelier config defines,
and the per-launch config that carries the picks to the background run (key variable NAMES only, never values)."""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from app.agents import config
from backends.cuda_remote import config as remote
from backends.executor import ConfigError

AS_TARGET = ""
BUILT_IN = [("as the target says", AS_TARGET), ("local MLX", "mlx"), ("local torch", "local")]
OFFLINE = ("tuner",)
NONE = "none"


@dataclass
class Choices:
    path: Path
    executors: list[tuple[str, str]]
    endpoints: dict[str, config.Endpoint] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    problem: str = ""

    def options(self, role: str) -> list[tuple[str, str]]:
        """The endpoints a role may use: a coding-agent harness only for the implementer."""
        return [(self.label(n), n) for n, e in self.endpoints.items() if role == "implementer" or not e.harness]

    def label(self, name: str) -> str:
        """The model (or harness), with the config table it comes from when another endpoint serves the same."""
        said = {n: e.harness or e.model for n, e in self.endpoints.items()}
        return said[name] if list(said.values()).count(said[name]) == 1 else f"{said[name]} ({name})"


def load() -> Choices:
    """The config's executors and endpoints; a config that cannot be read gives only the local choices and a problem."""
    path = config.path()
    executors = list(BUILT_IN)
    try:
        for r in remote.configured():
            executors.append((f"{r.name}: {r.user + '@' if r.user else ''}{r.host} over SSH", f"cuda_remote:{r.name}"))
        llm = config.load(path)
    except ConfigError as error:
        return Choices(path, list(BUILT_IN), problem=str(error))
    if llm is None:
        return Choices(path, executors)
    endpoints: dict[str, config.Endpoint] = {}
    for name, endpoint in {"llm": llm.llm, **{f"roles.{r}": e for r, e in llm.roles.items()}}.items():
        if endpoint not in endpoints.values():
            endpoints[name] = endpoint
    defaults = {role: next(n for n, e in endpoints.items() if e == llm.endpoint(role)) for role in config.ROLES}
    return Choices(path, executors, endpoints, defaults)


def settings(choices: Choices, picks: dict[str, str]) -> dict:
    """The config with every role set to its picked endpoint; ConfigError when the result is not a valid config."""
    try:
        raw = tomllib.loads(choices.path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{choices.path}: {e}") from e
    raw["roles"] = {role: dataclasses.asdict(choices.endpoints[name]) for role, name in picks.items()}
    try:
        config.parse(choices.path, raw)
    except ConfigError as e:
        raise ConfigError(f"with these endpoints: {e}") from e
    return raw
