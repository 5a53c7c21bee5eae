import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from backends.executor import ConfigError

KEYS = {"host", "user", "port", "identity", "workdir", "python", "env", "ssh_config", "retries", "backoff"}
EXAMPLE = '[executors.NAME] with host = "gpu-box"'


@dataclass
class Remote:
    name: str
    host: str
    user: str = ""
    port: int = 0
    identity: str = ""
    workdir: str = "~/atelier"
    python: str = "python3"
    env: dict[str, str] = field(default_factory=dict)
    ssh_config: str = ""
    retries: int = 6
    backoff: float = 1.0


def path() -> Path:
    return Path(os.environ.get("ATELIER_CONFIG") or Path.home() / ".config" / "atelier" / "config.toml")


def load(name: str = "") -> Remote:
    """The executor `[executors.NAME]`; without a name, the only one configured."""
    file = path()
    tables = _executors(file)
    if not name:
        if len(tables) != 1:
            found = ", ".join(sorted(tables)) or "none"
            raise ConfigError(f"{file}: name the executor as 'cuda_remote:NAME' (configured: {found})")
        name = next(iter(tables))
    if name not in tables:
        raise ConfigError(f"{file}: no [executors.{name}] table; add one: {EXAMPLE}")
    return _build(file, name, tables[name])


def configured() -> list[Remote]:
    """Every `[executors.NAME]` in the config, checked, by name; none without a config file."""
    file = path()
    if not file.exists():
        return []
    return [_build(file, name, raw) for name, raw in sorted(_executors(file).items())]


def _executors(file: Path) -> dict[str, dict]:
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no Atelier config; create it with a table {EXAMPLE}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{file}: {e}") from None
    tables = raw.get("executors", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError(f"{file}: 'executors' must hold tables like {EXAMPLE}")
    return tables


def _build(file: Path, name: str, raw: dict) -> Remote:
    where = f"{file}: executors.{name}"
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(KEYS))})")
    if not isinstance(raw.get("host"), str) or not raw["host"]:
        raise ConfigError(f"{where}.host: missing; the ssh host or ~/.ssh/config alias")
    for key in ("user", "identity", "workdir", "python", "ssh_config"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{where}.{key}: must be a string")
    if "port" in raw and (not isinstance(raw["port"], int) or not 0 < raw["port"] < 65536):
        raise ConfigError(f"{where}.port: must be a port number")
    if "retries" in raw and (not isinstance(raw["retries"], int) or raw["retries"] < 0):
        raise ConfigError(f"{where}.retries: must be a whole number ≥ 0")
    if "backoff" in raw and (not isinstance(raw["backoff"], int | float) or raw["backoff"] < 0):
        raise ConfigError(f"{where}.backoff: must be a number of seconds ≥ 0")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{where}.env: must be a table of strings")
    return Remote(name=name, **raw)
