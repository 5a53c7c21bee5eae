"""Every tool's JSON schema, and each role's typed submit tool: defined here and nowhere else."""

from typing import Any

ISSUE_CAP = 3
MEMORY_KINDS = ("learned", "implementation failed", "does not suit this target")


def _object(required: list[str], **properties) -> dict:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


TEXT = {"type": "string", "minLength": 1}
TEXTS = {"type": "array", "items": TEXT}


def _issues(cap: int) -> dict:
    issue = _object(["title", "detail"], title=TEXT, detail={"type": "string"})
    return {"type": "array", "maxItems": cap, "items": issue}


FINDING = _object(["file", "line", "evidence"], file=TEXT, line={"type": "integer", "minimum": 1}, evidence=TEXT)
MEMORY_EDIT = _object(
    ["kind", "text"], kind={"enum": list(MEMORY_KINDS)}, text=TEXT, issue_id={"type": "integer", "minimum": 1}
)

SUBMIT = {
    "implementer": _object(
        ["summary", "files_changed", "claims"],
        summary=TEXT, files_changed=TEXTS, claims=TEXTS, new_issues=_issues(ISSUE_CAP),
    ),
    "judge": _object(
        ["verdict", "failed_checks", "reward_hacking_findings"],
        verdict={"enum": ["pass", "fail"]}, failed_checks=TEXTS,
        reward_hacking_findings={"type": "array", "items": FINDING}, new_issues=_issues(ISSUE_CAP),
    )
    | {
        "if": {"properties": {"verdict": {"const": "fail"}}},
        "then": {"properties": {"reward_hacking_findings": {"minItems": 1}}},
    },
    "evaluator": _object(
        ["metric", "bottleneck", "hints"], metric=TEXT, bottleneck=TEXT, hints=TEXTS, new_issues=_issues(ISSUE_CAP)
    ),
    "orchestrator": _object(
        ["issue_id", "memory_edits", "new_issues"],
        issue_id={"type": "integer", "minimum": 1}, revert_to={"type": "string", "pattern": "^[0-9a-f]{7,40}$"},
        memory_edits={"type": "array", "items": MEMORY_EDIT}, new_issues=_issues(2 * ISSUE_CAP),
    ),
}  # fmt: skip

SUBMIT_HELP = {
    "implementer": "Finish: what you changed, the files, and the claims a reviewer should verify.",
    "judge": "Finish: pass, or fail with each reward-hacking finding cited by file and line.",
    "evaluator": "Finish: the metric that matters, the bottleneck, and hints for the next change.",
    "orchestrator": "Finish: the issue to work on this round, optional revert, memory edits and new issues.",
}

PATH = {"type": "string", "description": "relative to the workspace"}

TOOLS = {
    "list": ("List the files under a folder.", _object([], path=PATH)),
    "read": (
        "Read a text file with line numbers.",
        _object(["path"], path=PATH, offset={"type": "integer", "minimum": 1}, limit={"type": "integer", "minimum": 1}),
    ),
    "write": ("Create or replace a file.", _object(["path", "content"], path=PATH, content={"type": "string"})),
    "edit": (
        "Replace one exact, unique occurrence of old with new in a file.",
        _object(["path", "old", "new"], path=PATH, old=TEXT, new={"type": "string"}),
    ),
    "search": ("Lines matching a regular expression: file:line: text.", _object(["pattern"], pattern=TEXT, path=PATH)),
    "run": (
        "Run a shell command in the workspace; output is cut to its tail.",
        _object(["command"], command=TEXT, timeout_s={"type": "number", "minimum": 1, "maximum": 600}),
    ),
    "profile": (
        "Run the candidate's benchmark once more under a profiler (nsys where the host has it, else torch.profiler, "
        "cProfile for MLX) and read the summary: top kernels and API calls, or top functions, by time. It takes "
        "about one benchmark run and never changes the measured numbers.",
        _object([]),
    ),
    "list_skills": ("The skills that apply to this target's backend.", _object([])),
    "read_skill": ("Read one skill's instructions.", _object(["name"], name=TEXT)),
}

READ_ONLY = ("list", "read", "search", "list_skills", "read_skill")
ROLE_TOOLS = {
    "implementer": (*READ_ONLY, "write", "edit", "run"),
    "judge": READ_ONLY,
    "evaluator": (*READ_ONLY, "profile"),
    "orchestrator": READ_ONLY,
}


def specs(role: str) -> list[Any]:
    """The Chat Completions `tools` list for a role: its tools, then its submit tool."""
    found = [(name, *TOOLS[name]) for name in ROLE_TOOLS[role]]
    found.append(("submit", SUBMIT_HELP[role], SUBMIT[role]))
    return [{"type": "function", "function": {"name": n, "description": d, "parameters": p}} for n, d, p in found]


def schema(role: str, tool: str) -> dict | None:
    if tool == "submit":
        return SUBMIT[role]
    return TOOLS[tool][1] if tool in ROLE_TOOLS[role] else None
