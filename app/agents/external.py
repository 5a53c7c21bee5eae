"""Implementers that are whole coding agents: `codex exec --json` or `claude -p --output-format stream-json`,
run in the workspace with their own tool sandbox. Their event stream goes to the transcript; their final message
ends with the implementer's submit as one JSON object, validated like the submit tool's arguments."""

import json
import re
import shutil
from dataclasses import dataclass

import jsonschema

from app.agents import schemas
from app.agents.prompts import SYSTEM, context
from app.agents.roles import Bound
from app.agents.transcript import Redactor, Transcript, transcript_path
from app.roles import Attempt, Change, RoleError, Task
from app.run import ActiveRun
from app.workspace import Workspace

TIMEOUT_S = 3600.0
FINAL = (
    "When you are done, end your final message with one JSON object (and nothing after it) with the keys "
    f"summary, files_changed and claims, matching this JSON schema: {json.dumps(schemas.SUBMIT['implementer'])}"
)


@dataclass
class Outcome:
    text: str = ""
    error: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0


def codex_command(prompt: str) -> list[str]:
    return ["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write", prompt]


def claude_command(prompt: str) -> list[str]:
    return ["claude", "-p", prompt, "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"]


def codex_event(event: dict, outcome: Outcome) -> None:
    kind, item = event.get("type"), event.get("item") or {}
    if kind == "item.completed" and item.get("type") == "agent_message":
        outcome.text = item.get("text", "")
    elif kind == "turn.completed":
        usage = event.get("usage") or {}
        outcome.tokens_in += usage.get("input_tokens", 0)
        outcome.tokens_out += usage.get("output_tokens", 0)
    elif kind in ("turn.failed", "error"):
        error = event.get("error") or event
        outcome.error = str(error.get("message") or error)


def claude_event(event: dict, outcome: Outcome) -> None:
    if event.get("type") != "result":
        return
    usage = event.get("usage") or {}
    outcome.tokens_in, outcome.tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    outcome.cost = float(event.get("total_cost_usd") or 0.0)
    if event.get("is_error") or event.get("subtype") != "success":
        outcome.error = str(event.get("result") or event.get("subtype"))
    else:
        outcome.text = event.get("result", "")


HARNESSES = {"codex": (codex_command, codex_event), "claude": (claude_command, claude_event)}


class ExternalImplementer(Bound):
    """An Implementer that hands the task to an installed coding agent CLI (`codex` or `claude`)."""

    def __init__(self, harness: str, secrets: list[str]):
        if harness not in HARNESSES:
            raise RoleError(f"unknown implementer harness '{harness}' (known: {', '.join(HARNESSES)})")
        self.harness, self.secrets = harness, secrets

    def implement(self, task: Task, workspace: Workspace, feedback: list[Attempt]) -> Change:
        run = self.bound()
        build, read = HARNESSES[self.harness]
        command = build(self.prompt(run, task, feedback))
        if shutil.which(command[0]) is None:
            raise RoleError(f"the {self.harness} CLI is not on PATH: install it or choose another implementer")
        outcome = self.drive(run, command, workspace, read)
        return change(outcome.text)

    def prompt(self, run: ActiveRun, task: Task, feedback: list[Attempt]) -> str:
        earlier = "\n".join(f"- attempt {i}: {a.error}" for i, a in enumerate(feedback, 1))
        return (
            SYSTEM["implementer"]
            + "\n\n"
            + context(
                ("Task", f"{task.title}\n\n{task.detail}".strip()),
                ("Objective of the target", run.target.objective),
                ("Earlier attempts this round", earlier),
                ("How to finish", FINAL),
            )
        )

    def drive(self, run: ActiveRun, command: list[str], workspace: Workspace, read) -> Outcome:
        transcript = Transcript(transcript_path(run.dir, self.n, "implementer"), Redactor(self.secrets))
        transcript.write("request", {"harness": self.harness, "command": command})
        outcome = Outcome()

        def on_line(line: str) -> None:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                transcript.write("output", {"text": line})
                return
            if isinstance(event, dict):
                transcript.write("event", event)
                read(event, outcome)

        result = run.executor.run(command, workspace.path, TIMEOUT_S, on_line=on_line)
        run.store.add_usage(run.id, self.n, "implementer", 1, outcome.tokens_in, outcome.tokens_out, 0.0, outcome.cost)
        if result.timed_out:
            raise RoleError(f"{self.harness} did not finish within {TIMEOUT_S:g} s")
        if outcome.error or not result.ok:
            raise RoleError(f"{self.harness} failed: {outcome.error or result.tail(3)}")
        return outcome


def change(text: str) -> Change:
    """The submit object that ends the agent's final message, validated against the implementer's schema."""
    submitted = last_object(text)
    if submitted is None:
        raise RoleError(f"the final message ends with no JSON object: {text[-200:]!r}")
    validator = jsonschema.Draft202012Validator(schemas.SUBMIT["implementer"])
    problems = sorted(e.message for e in validator.iter_errors(submitted))
    if problems:
        raise RoleError("the final JSON object is not a valid submit: " + "; ".join(problems))
    return Change(submitted["summary"], submitted["files_changed"], submitted["claims"])


def last_object(text: str) -> dict | None:
    """The JSON object that ends text (a closing code fence may follow it)."""
    decoder = json.JSONDecoder()
    for start in reversed([m.start() for m in re.finditer(r"\{", text)]):
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and not text[end:].strip().strip("`").strip():
            return value
    return None
