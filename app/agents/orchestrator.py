"""The Orchestrator: once per round, from the backlog, the rounds so far and memory.md, it picks the issue to
work on, may revert to an earlier accepted commit, edits memory and files new issues."""

from functools import partial

from app import control
from app.agents import memory
from app.agents.config import Config
from app.agents.prompts import SYSTEM, context
from app.agents.session import Session
from app.run import ActiveRun
from app.store import Issue, Round


class Orchestrator:
    def __init__(self, config: Config):
        self.config = config

    def choose(self, run: ActiveRun, n: int) -> dict:
        issues = run.store.issues(run.id)
        rounds = run.store.rounds(run.id)
        first_new = max((i.id for i in issues), default=0) + 1
        backlog = "\n".join(_issue_line(i) for i in issues)
        user = context(
            ("Objective of the target", run.target.objective),
            ("Memory (memory.md)", memory.read(run)),
            ("Backlog", f"{backlog}\n\nIssues you file now get ids {first_new}, {first_new + 1}, …; you may pick one."),
            ("Rounds so far", "\n".join(_round_line(r) for r in rounds) or "none yet"),
            ("Best stack", f"commit {run.record.best_commit}"),
            ("Notes from the user", "\n".join(control.notes(run.store, run.id))),
        )
        check = partial(_invalid, issues=issues, rounds=rounds, first_new=first_new)
        session = Session(run, n, "orchestrator", self.config, run.workspace.path, check)
        return session.submit(SYSTEM["orchestrator"], user)


def accepted_round(rounds: list[Round], commit: str) -> Round | None:
    found = [r for r in rounds if r.status == "accepted" and r.commit_sha and r.commit_sha.startswith(commit)]
    return found[0] if len(found) == 1 else None


def _invalid(submitted: dict, issues: list[Issue], rounds: list[Round], first_new: int) -> str | None:
    new = set(range(first_new, first_new + len(submitted["new_issues"])))
    open_ids = {i.id for i in issues if i.status == "open"} | new
    if submitted["issue_id"] not in open_ids:
        return f"issue_id {submitted['issue_id']} is not an open issue (open: {sorted(open_ids) or 'none; file one'})"
    revert = submitted.get("revert_to")
    if revert and accepted_round(rounds, revert) is None:
        accepted = [r.commit_sha for r in rounds if r.status == "accepted"]
        return f"revert_to {revert} is not the commit of one accepted round (accepted: {accepted or 'none'})"
    known = {i.id for i in issues} | new
    for edit in submitted["memory_edits"]:
        if "issue_id" in edit and edit["issue_id"] not in known:
            return f"memory edit names issue {edit['issue_id']}, which does not exist"
        if edit["kind"] == "does not suit this target" and edit.get("issue_id") == submitted["issue_id"]:
            return "the picked issue cannot also be dropped as not suiting this target"
    return None


def _issue_line(i: Issue) -> str:
    lines = [i.detail.strip()[:500], *i.history.splitlines()]
    return f"#{i.id} [{i.status}] {i.title} (from {i.source})" + "".join(f"\n    {line}" for line in lines if line)


def _round_line(r: Round) -> str:
    ratio = f", {r.ratio:.3f}× baseline" if r.ratio else ""
    commit = f", commit {r.commit_sha[:12]}" if r.commit_sha else ""
    return f"round {r.n} [{r.status}{ratio}{commit}] {r.task}: {(r.reason or '')[:300]}"
