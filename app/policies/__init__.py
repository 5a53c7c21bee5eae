"""Outer-loop policies. `--policy NAME` loads `app.policies.NAME`, which exports a class named Policy."""

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Protocol

from app.roles import Advisor, Change, Implementer, Measurement, Reviewer, Task


@dataclass
class Outcome:
    status: str  # accepted | rejected | failed
    reason: str
    change: Change | None = None
    measurement: Measurement | None = None
    tree: str | None = None  # the snapshot judged and measured: what is committed


class Policy(Protocol):
    name: str
    implementer: Implementer
    reviewer: Reviewer | None
    advisor: Advisor | None

    def next(self, run) -> tuple[Task, str] | None:
        """The next round's task and the commit it starts from; None when the policy has nothing left to try."""
        ...

    def record(self, run, n: int, task: Task, outcome: Outcome) -> None: ...

    def stop(self, run) -> str | None:
        """Why the run must stop before another round (an LLM budget spent), or None."""
        ...


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def load(name: str) -> Policy:
    if name not in names():
        raise ValueError(f"unknown policy '{name}' (known: {', '.join(names())})")
    return importlib.import_module(f"app.policies.{name}").Policy()
