"""The offline tuner: no LLM. It walks the candidate's declared knobs (coordinate descent with first improvement):
from the incumbent's settings it proposes, in the file's order, each setting that differs in one knob and has not
been measured yet. An accepted proposal becomes the incumbent, and the walk goes on from there. A knob that acts
only under other knobs' values (`when` in the knobs file) is proposed together with the first of them. Some knobs
only pay off together, so a one-knob change that measured faster than the incumbent but was not accepted, its
interval still reaching the acceptance test's minimum gain, is promising: before any further one-knob change, it
is tried together with each other knob's values, except changes that already lost. A one-knob change lost when it
measured slower, or failed the Judge, from some earlier incumbent; going back on any knob of a change that
measured faster lost too. Such changes wait until the fresh one-knob changes are measured. When every one-knob
neighbour has been measured, the remaining two-knob settings follow. When those are measured too, the incumbent is
a local optimum and the tuner stops. Everything it knows is read back from the store, so a resumed run carries on
where it stopped."""

import itertools
import json

from app import knobs
from app.acceptance import Rule
from app.policies import Outcome
from app.roles import Change, Task
from app.workspace import Workspace
from backends import platform


class KnobSetter:
    """The tuner's Implementer: one knob's default rewritten in atelier.knobs.toml."""

    def implement(self, task: Task, workspace: Workspace, feedback) -> Change:
        for name, value in task.proposal["changes"].items():
            knobs.set_default(workspace.path, name, value)
        return Change("set " + ", ".join(f"{k} = {v!r}" for k, v in task.proposal["changes"].items()), [knobs.FILE])


class Policy:
    name = "tuner"
    reviewer = None
    advisor = None

    def __init__(self):
        self.implementer = KnobSetter()

    def next(self, run) -> tuple[Task, str] | None:
        every = knobs.read(run.workspace.path)
        current = {k.name: k.default for k in every}
        declared = [k for k in every if k.acts_on(platform.of(run.executor.kind))]
        rounds = _measured(run)
        seen = {_key(current)} | {_key(p["from"]) for p in rounds} | {_key(p["setting"]) for p in rounds}
        for changes in _candidates(declared, current, rounds):
            setting = current | changes
            if _key(setting) not in seen:
                proposal = {"changes": changes, "from": current, "setting": setting}
                title = ", ".join(f"{k}={v}" for k, v in changes.items())
                detail = "; ".join(k.help for k in declared if k.name in changes)
                return Task(title, detail, proposal), run.record.best_commit
        return None

    def record(self, run, n: int, task: Task, outcome: Outcome) -> None:
        pass

    def stop(self, run) -> None:
        return None


def _neighbours(declared: list[knobs.Knob], current: dict, distance: int):
    for group in itertools.combinations(declared, distance):
        choices = [[v for v in k.values if v != current[k.name]] for k in group]
        for values in itertools.product(*choices):
            yield {k.name: v for k, v in zip(group, values, strict=True)}


def _candidates(declared: list[knobs.Knob], current: dict, rounds: list[dict]):
    """Promising changes paired with every other knob first, then one-knob and two-knob neighbours."""
    singles = [_enabled(declared, current, c) for c in _neighbours(declared, current, 1)]
    lost = _lost(rounds)
    for promising in _promising(current, rounds):
        for other in singles:
            if not other.keys() & promising.keys() and _key(other) not in lost:
                yield promising | other
    yield from (c for c in singles if _key(c) not in lost)
    yield from (c for c in singles if _key(c) in lost)
    yield from _neighbours(declared, current, 2)


def _enabled(declared: list[knobs.Knob], current: dict, changes: dict) -> dict:
    """A change to a knob that does not act under the current setting comes with what makes it act."""
    [knob] = [k for k in declared if k.name in changes]
    if knob.active(current):
        return changes
    return changes | {name: values[0] for name, values in knob.when.items() if current[name] not in values}


def _lost(rounds: list[dict]) -> set[str]:
    """One-knob changes that measured slower, or failed the Judge, from some earlier incumbent, and the way
    back of each knob of a change that measured faster."""
    lost = set()
    for p in rounds:
        changes = p.get("changes", {})
        if (p["gain"] or 0) >= 1:
            lost |= {_key({name: p["from"][name]}) for name in changes}
        elif len(changes) == 1:
            lost.add(_key(changes))
    return lost


def _promising(current: dict, rounds: list[dict]) -> list[dict]:
    faster = [p for p in rounds if p["from"] == current and len(p.get("changes", {})) == 1 and _undecided(p)]
    return [p["changes"] for p in sorted(faster, key=lambda p: -p["gain"])]


def _undecided(p: dict) -> bool:
    """Measured faster, not accepted, and its interval still reaches the minimum gain the acceptance test wants
    (a round measured before intervals were recorded: faster is enough)."""
    if (p["gain"] or 0) <= 1:
        return False
    return p["high"] is None or p["high"] > 1 + Rule().min_effect


def _measured(run) -> list[dict]:
    """The proposals of every finished round, each with its side-by-side gain (None when not benchmarked)."""
    found = []
    for r in run.store.rounds(run.id):
        if r.status in ("accepted", "rejected", "failed") and r.proposal:
            found.append(json.loads(r.proposal) | {"gain": r.gain, "high": r.high})
    return found


def _key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)
