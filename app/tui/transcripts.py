"""A round's agent transcripts (runs/<id>/transcripts/round-N/<role>.jsonl) as readable text: each message once,
then the Evaluator's profiles of the round (runs/<id>/profiles/round-N/<side>.txt)."""

import json
from pathlib import Path

CUT = 1500
ROLES = ("orchestrator", "implementer", "judge", "evaluator")


def text(run_dir: Path, n: int) -> str:
    folder = run_dir / "transcripts" / f"round-{n}"
    files = sorted(folder.glob("*.jsonl"), key=lambda p: (ROLES.index(p.stem) if p.stem in ROLES else 9, p.stem))
    profiles = sorted((run_dir / "profiles" / f"round-{n}").glob("*.txt"))
    shown = [f"━━ profile: {p} ━━\n{_read(p)}" for p in profiles]
    return "\n\n".join([role(path) for path in files] + shown)


def role(path: Path) -> str:
    lines, seen = [f"━━ {path.stem} ━━"], 0
    for raw in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if entry.get("kind") == "request" and isinstance(entry.get("messages"), list):
            lines += [message(m) for m in entry["messages"][seen:] if m.get("role") != "assistant"]
            seen = len(entry["messages"])
        elif entry.get("kind") == "response":
            choices = entry.get("choices") or [{}]
            lines.append(message(choices[0].get("message") or {}))
        elif entry.get("kind") in ("error", "event", "output"):
            lines.append(
                f"[{entry['kind']}] " + cut(json.dumps({k: v for k, v in entry.items() if k not in ("ts", "kind")}))
            )
    return "\n".join(lines)


def message(m: dict) -> str:
    calls = [
        f"  → {c['function']['name']}({cut(c['function'].get('arguments', ''))})" for c in m.get("tool_calls") or []
    ]
    said = cut(m.get("content") or "")
    return "\n".join([f"{m.get('role', '?')}: {said}".rstrip(), *calls])


def cut(value: str) -> str:
    return value if len(value) <= CUT else value[:CUT] + f" … [{len(value) - CUT} more characters]"


def _read(path: Path) -> str:
    with path.open(newline="", errors="replace") as f:
        return f.read()
