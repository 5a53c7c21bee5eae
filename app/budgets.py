"""A run's budgets (max rounds, max minutes, plateau, baseline repeats): their defaults and the one check of a typed
value, used by the CLI's options, the TUI's launch form and the TUI's mid-run budget change."""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    key: str
    label: str
    whole: bool
    about: str

    @property
    def default(self) -> int | float:
        """The run's own default (app.run.Options), imported on first use."""
        from app.run import Options

        return getattr(Options(), self.key)


BUDGETS = (
    Budget("max_rounds", "max rounds", True, "stop after this many rounds"),
    Budget("max_minutes", "max minutes", False, "stop after this much time in rounds"),
    Budget("plateau", "plateau", True, "stop after this many rounds without a gain"),
)
BY_KEY = {b.key: b for b in BUDGETS}


def count(text: str) -> int:
    """A whole number of at least 1; ValueError with the message the CLI and the TUI both show."""
    text = text.strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


def minutes(text: str) -> float:
    """A number of minutes above 0."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a number of minutes above 0, not {text.strip()!r}")
    return value


def parse(key: str, text: str) -> int | float:
    """One budget typed as text: its value, or ValueError naming the budget."""
    budget = BY_KEY[key]
    try:
        return count(text) if budget.whole else minutes(text)
    except ValueError as e:
        raise ValueError(f"{budget.label}: {e}") from None


def parse_all(typed: dict[str, str]) -> dict[str, int | float]:
    """The budgets a form filled in (empty: the default, left out); ValueError naming every bad one."""
    values, problems = {}, []
    for key, text in typed.items():
        if text.strip():
            try:
                values[key] = parse(key, text)
            except ValueError as e:
                problems.append(str(e))
    if problems:
        raise ValueError("; ".join(problems))
    return values
