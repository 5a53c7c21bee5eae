"""The offline tuner: no LLM. It walks the candidate's declared knobs one at a time (coordinate descent with
first improvement): from the incumbent's settings it proposes, in the file's order, each setting that differs
in one knob and has not been measured yet. An accepted proposal becomes the incumbent, and the walk goes on
from there; when every such neighbour has been measured, the incumbent is a local optimum and the tuner stops.
Everything it knows is read back from the store, so a resumed run carries on where it stopped."""

import json

from app import knobs
from app.policies import Outcome
from app.roles import Change, Task
from app.workspace import Workspace


class KnobSetter:
    """The tuner's Implementer: one knob's default rewritten in atelier.knobs.toml."""

    def implement(self, task: Task, workspace: Workspace, feedback) -> Change:
        knobs.set_default(workspace.path, task.proposal["knob"], task.proposal["value"])
        return Change(f"set {task.proposal['knob']} = {task.proposal['value']!r}", [knobs.FILE])


class Policy:
    name = "tuner"

    def __init__(self):
        self.implementer = KnobSetter()

    def next(self, run) -> tuple[Task, str] | None:
        declared = knobs.read(run.workspace.path)
        current = {k.name: k.default for k in declared}
        seen = _measured(run) | {_key(current)}
        for knob in declared:
            for value in knob.values:
                setting = current | {knob.name: value}
                if _key(setting) not in seen:
                    proposal = {"knob": knob.name, "value": value, "from": current, "setting": setting}
                    return Task(f"{knob.name}={value}", knob.help, proposal), run.record.best_commit
        return None

    def record(self, run, n: int, task: Task, outcome: Outcome) -> None:
        pass


def _measured(run) -> set[str]:
    seen = set()
    for r in run.store.rounds(run.id):
        if r.status in ("accepted", "rejected", "failed") and r.proposal:
            proposal = json.loads(r.proposal)
            seen |= {_key(proposal["from"]), _key(proposal["setting"])}
    return seen


def _key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)
