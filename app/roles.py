"""The inner loop's contract: what each role is given and what it returns."""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Task:
    title: str
    detail: str = ""
    proposal: dict = field(default_factory=dict)


@dataclass
class Change:
    """The Implementer's result."""

    summary: str
    files: list[str] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """The Accuracy Judge's result."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)  # for the user only: what hidden checks found


@dataclass
class Measurement:
    """The Performance Evaluator's result: interleaved pairs, the gain they estimate with its interval, and
    whether the acceptance test found it real. noise: the spread of one pair's log-ratio in the run so far."""

    metric: str
    candidate: list[float]
    incumbent: list[float]
    candidate_median: float
    incumbent_median: float
    gain: float
    noise: float
    accepted: bool
    extra: dict[str, float] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    pairs: int = 0
    why: str = ""

    @property
    def interval(self) -> str:
        if self.low is None or self.high is None or self.high == float("inf"):
            return "no interval yet"
        return f"{self.low:.3f}–{self.high:.3f}×"

    @property
    def summary(self) -> str:
        verdict = "accepted" if self.accepted else "rejected"
        return (
            f"{self.metric} {self.candidate_median:.4g} vs {self.incumbent_median:.4g} side by side, "
            f"{self.gain:.3f}× ({self.interval}) over {self.pairs or len(self.candidate)} pairs: {verdict}, "
            f"{self.why or 'by the acceptance test'} (noise ±{self.noise:.1%} a pair)"
        )


@dataclass
class Attempt:
    change: Change | None = None
    verdict: Verdict | None = None
    error: str = ""


class Implementer(Protocol):
    def implement(self, task: Task, workspace, feedback: list[Attempt]) -> Change:
        """Change the candidate in the workspace for the task; earlier failed attempts this round are feedback."""
        ...


class Reviewer(Protocol):
    def review(self, run, n: int, change: Change, diff: str) -> Verdict:
        """A second opinion after the deterministic checks passed: it can fail the candidate, never pass it."""
        ...


class Advisor(Protocol):
    def advise(self, run, n: int, measurement: Measurement, diff: str) -> list[str]:
        """Bottleneck and hints for the record; the measurement and its acceptance stay as measured."""
        ...


class RoleError(Exception):
    """A role could not produce a usable result; the attempt fails with this message."""


class BudgetSpent(RoleError):
    """An LLM budget of the run is spent: the attempt fails and the run stops before the next round."""
