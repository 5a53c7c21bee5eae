"""Evolve: the population is the run's accepted commits, the seed included, each with its measured gain over the
baseline. Each round samples a parent from it (a softmax over those gains, seeded by the run id and the round, so
a resumed run samples the same parents) and gives the standing task, the target's own instructions, to a fresh
Implementer starting from that parent. The child is benchmarked side by side against its parent and joins the
population (refs/atelier/accepted/<round>) when it beats it; the run's best moves only when the child beats the
best too. What each child brought is appended to memory.md."""

import math
import random
from dataclasses import dataclass

from app.agents import memory
from app.agents.team import Team
from app.loop import next_round
from app.policies import Outcome
from app.roles import Task

TEMPERATURE = 0.5


@dataclass
class Member:
    commit: str
    ratio: float  # gain over the baseline
    round: int  # 0: the seed

    @property
    def name(self) -> str:
        where = "the seed" if self.round == 0 else f"round {self.round}"
        return f"{where} ({self.commit[:12]}, {self.ratio:.2f}× the baseline)"


def population(run) -> list[Member]:
    accepted = [r for r in run.store.rounds(run.id) if r.status == "accepted" and r.commit_sha and r.ratio]
    return [Member(run.workspace.root, 1.0, 0), *(Member(r.commit_sha, r.ratio, r.n) for r in accepted)]


def choose(members: list[Member], seed: str) -> Member:
    """One parent, the fitter the likelier; the same seed picks the same parent."""
    top = max(m.ratio for m in members)
    weights = [math.exp((m.ratio - top) / TEMPERATURE) for m in members]
    return random.Random(seed).choices(members, weights)[0]


class Policy(Team):
    name = "evolve"

    def next(self, run) -> tuple[Task, str]:
        n = next_round(run)
        members = population(run)
        parent = choose(members, f"{run.id}/{n}")
        run.say(n, "evolve", f"parent: {parent.name}, of {len(members)} in the population")
        self.implementer.bind(run, n)
        detail = f"This round starts from {parent.name}."
        return Task("standing task: the target's objective", detail, {"parent": parent.round}), parent.commit

    def record(self, run, n: int, task: Task, outcome: Outcome) -> None:
        tried = f" ({outcome.change.summary})" if outcome.change else ""
        parent = "the seed" if task.proposal["parent"] == 0 else f"round {task.proposal['parent']}"
        memory.append(run, n, [f"child of {parent}: {outcome.status}{tried}: {outcome.reason}"])
