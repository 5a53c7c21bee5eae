"""Every LLM request and response of a round and role, one JSON line each, with keys redacted."""

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

REDACTED = "<redacted>"
PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[^\s\"'\\]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(\"authorization\"\s*:\s*\")[^\"]*"), rf"\1{REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), f"sk-{REDACTED}"),
]


@dataclass
class Redactor:
    secrets: list[str]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if len(secret) >= 4:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in PATTERNS:
            text = pattern.sub(replacement, text)
        return text


@dataclass
class Transcript:
    path: Path
    redact: Redactor

    def write(self, kind: str, body: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"ts": time.time(), "kind": kind, **body}, default=str)
        with self.path.open("a") as f:
            f.write(self.redact(line) + "\n")


def transcript_path(run_dir: Path, n: int, role: str) -> Path:
    return run_dir / "transcripts" / f"round-{n}" / f"{role}.jsonl"
