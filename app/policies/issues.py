"""Issues: a backlog in the store. Each round the Orchestrator picks one open issue (the first is the target's
objective), may revert to an earlier accepted commit, edits memory.md and files issues; the inner loop's agents
may file issues too. An accepted round closes its issue; any other outcome goes into the issue's history."""

from app import control
from app.agents import memory
from app.agents.orchestrator import Orchestrator, accepted_round
from app.agents.roles import file_issues
from app.agents.team import Team
from app.inner import timed
from app.loop import next_round
from app.policies import Outcome
from app.roles import Task


class Policy(Team):
    name = "issues"

    def __init__(self):
        super().__init__()
        self.orchestrator = Orchestrator(self.config)

    def next(self, run) -> tuple[Task, str]:
        n = next_round(run)
        self._tidy(run, n)
        with timed(run, n, "orchestrator"):
            choice = self.orchestrator.choose(run, n)
        file_issues(run, n, "orchestrator", choice)
        if choice.get("revert_to"):
            self._revert(run, choice["revert_to"])
        edits = choice["memory_edits"]
        memory.append(run, n, [f"[{e['kind']}] {e['text']}" for e in edits])
        for e in edits:
            if e["kind"] == "does not suit this target" and "issue_id" in e:
                run.store.update_issue(run.id, e["issue_id"], "dropped", f"round {n}: does not suit: {e['text']}")
        [issue] = [i for i in run.store.issues(run.id) if i.id == choice["issue_id"]]
        run.store.update_issue(run.id, issue.id, "working")
        run.say(n, "orchestrate", f"issue #{issue.id}: {issue.title}")
        self.implementer.bind(run, n)
        return Task(f"#{issue.id} {issue.title}", issue.detail, {"issue": issue.id}), run.record.best_commit

    def record(self, run, n: int, task: Task, outcome: Outcome) -> None:
        status = "done" if outcome.status == "accepted" else "open"
        run.store.update_issue(run.id, task.proposal["issue"], status, f"round {n} {outcome.status}: {outcome.reason}")

    def _tidy(self, run, n: int) -> None:
        """The objective seeds an empty backlog; an issue left working by an interrupted round is open again."""
        issues = run.store.issues(run.id)
        if not issues:
            run.store.add_issue(run.id, "the target's objective", "", "target", n)
        for i in issues:
            if i.status == "working":
                run.store.update_issue(run.id, i.id, "open", "interrupted before its round ended")

    def _revert(self, run, commit: str) -> None:
        found = accepted_round(run.store.rounds(run.id), commit)
        assert found is not None
        control.revert(run.store, run.id, found.n)
        run.refresh()
        run.say(None, "orchestrate", f"reverted to round {found.n} ({commit[:12]})")
