"""The LLM configuration: one TOML file, $ATELIER_CONFIG or ~/.config/atelier/config.toml. Keys are named by the
environment variable that holds them, never written in the file."""

import dataclasses
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from backends.executor import ConfigError

ROLES = ("orchestrator", "implementer", "judge", "evaluator")
HARNESSES = ("", "codex", "claude")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_KEYS = ("api_key", "key", "token", "secret", "password")


@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key_env: str = ""
    max_retries: int = 2
    harness: str = ""  # the implementer only: "codex" or "claude" runs that coding agent CLI instead

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""


@dataclass
class Price:
    input: float
    output: float


@dataclass
class Budget:
    """Per run; 0 means no limit. call_timeout_s bounds each LLM call."""

    max_tokens: int = 0
    max_cost: float = 0.0
    max_minutes: float = 0.0
    call_timeout_s: float = 120.0


@dataclass
class Config:
    path: Path
    llm: Endpoint
    roles: dict[str, Endpoint] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)

    def endpoint(self, role: str) -> Endpoint:
        return self.roles.get(role, self.llm)

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self.prices.get(model)
        return (price.input * tokens_in + price.output * tokens_out) / 1e6 if price else 0.0

    def secrets(self) -> list[str]:
        return sorted({e.api_key for e in [self.llm, *self.roles.values()] if e.api_key})


def path() -> Path:
    return Path(os.environ.get("ATELIER_CONFIG") or Path.home() / ".config" / "atelier" / "config.toml")


def load(where: Path | None = None) -> Config | None:
    """The configuration, or None when no LLM is configured (no file at the default place, or no [llm] table)."""
    where = where or path()
    if not where.exists():
        if "ATELIER_CONFIG" in os.environ and where == path():
            raise ConfigError(f"{where}: ATELIER_CONFIG names a file that does not exist")
        return None
    try:
        data = tomllib.loads(where.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{where}: not a readable TOML file: {e}") from e
    try:
        return parse(where, data) if "llm" in data else None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e


def require() -> Config:
    config = load()
    if config is None:
        raise ConfigError(f"{path()}: no [llm] endpoint configured; this policy needs one (or use --policy tuner)")
    return config


def parse(where: Path, data: dict) -> Config:
    _known(data, "", {"llm", "roles", "prices", "budget", "executors"})
    llm = _endpoint(_table(data["llm"], "llm"), "llm", {})
    roles_table = _table(data.get("roles", {}), "roles")
    _known(roles_table, "roles.", set(ROLES))
    base = dataclasses.asdict(llm)
    roles = {r: _endpoint(_table(roles_table[r], f"roles.{r}"), f"roles.{r}", base) for r in roles_table}
    prices = {m: _typed(Price, _table(p, f'prices."{m}"'), f'prices."{m}"') for m, p in data.get("prices", {}).items()}
    budget = _typed(Budget, _table(data.get("budget", {}), "budget"), "budget")
    config = Config(where, llm, roles, prices, budget)
    if budget.max_cost:
        for role in ROLES:
            model = config.endpoint(role).model
            if model not in prices:
                raise ConfigError(f'budget.max_cost is set but prices."{model}" (the {role}\'s model) is missing')
    return config


def _endpoint(table: dict, where: str, defaults: dict) -> Endpoint:
    for key in table:
        if key in SECRET_KEYS:
            raise ConfigError(
                f"{where}.{key}: an API key is never read from the file; put it in an environment variable "
                f"and name that variable with {where}.api_key_env"
            )
    env = table.get("api_key_env", "")
    if isinstance(env, str) and env and not ENV_NAME.match(env):
        raise ConfigError(f"{where}.api_key_env must name an environment variable (like OPENAI_API_KEY), not a key")
    if table.get("harness", "") not in HARNESSES:
        raise ConfigError(f"{where}.harness must be one of {', '.join(h for h in HARNESSES if h)}, or absent")
    return _typed(Endpoint, defaults | table, where)


def _typed(cls, table: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kinds = typing.get_type_hints(cls)
    _known(table, f"{where}.", set(fields))
    for name, value in table.items():
        kind = kinds[name]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{where}.{name} must be {kind.__name__}, not {type(value).__name__} ({value!r})")
        if kind in (int, float) and value < 0:
            raise ConfigError(f"{where}.{name} must not be negative ({value!r})")
    missing = [n for n, f in fields.items() if n not in table and f.default is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}.{missing[0]} is missing")
    return cls(**table)


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _known(table: dict, prefix: str, known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key} is not a known key (known: {', '.join(sorted(known))})")
