"""Ralph: the same standing task every round, the target's own instructions, from the best stack so far.
What each round brought is appended to memory.md, which the next round's fresh Implementer reads."""

from app.agents import memory
from app.agents.team import Team
from app.loop import next_round
from app.policies import Outcome
from app.roles import Task


class Policy(Team):
    name = "ralph"

    def next(self, run) -> tuple[Task, str]:
        self.implementer.bind(run, next_round(run))
        return Task("standing task: the target's objective"), run.record.best_commit

    def record(self, run, n: int, task: Task, outcome: Outcome) -> None:
        tried = f" ({outcome.change.summary})" if outcome.change else ""
        memory.append(run, n, [f"{outcome.status}{tried}: {outcome.reason}"])
