"""Talk to a Show-o2 tiny stack (serve.py in a workspace, a JSON-lines worker); load the cases and thresholds.

The stack starts through the launch prefix in $ATELIER_CONFINE (a JSON list; unset or empty runs it plainly), sees
no harness path and writes each image into its own folder, under out/, where the harness reads it back."""

import json
import os
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

ENTRY = "serve.py"
READY_TIMEOUT = 600
REQUEST_TIMEOUT = 900
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    name: str
    prompt: str
    seed: int = 0
    steps: int = 20
    guidance: float = 2.5

    def request(self, out: Path, steps: int | None = None) -> dict:
        return {
            "id": self.name,
            "prompt": self.prompt,
            "seed": self.seed,
            "steps": steps or self.steps,
            "guidance": self.guidance,
            "out": str(out),
        }


def load_cases(inputs: Path) -> list[Case]:
    file = Path(inputs) / "cases.json"
    try:
        return [Case(**case) for case in json.loads(file.read_text())]
    except (OSError, json.JSONDecodeError, TypeError) as error:
        raise SystemExit(f"{file}: cannot read the cases: {error}") from None


def load_thresholds(path: Path = HERE / "thresholds.toml") -> dict:
    return tomllib.loads(path.read_text())


class StackError(RuntimeError):
    pass


def one_line(text: str) -> str:
    """Candidate-derived text as one line, so that it never forges a line of the harness's own."""
    return " ".join(str(text).split())


def launch_prefix() -> list[str]:
    return json.loads(os.environ.get("ATELIER_CONFINE") or "[]")


def out_path(workspace: Path, name: str) -> Path:
    """A fresh, unguessable file name under the stack's out/ folder for the image of one request."""
    folder = Path(workspace).resolve() / "out"
    folder.mkdir(exist_ok=True)
    return folder / f"{secrets.token_hex(8)}-{name}.png"


def read_back(path: Path, workspace: Path) -> bytes:
    """The file a stack wrote at path, refused when a link would lead the harness outside the stack's folder."""
    if not Path(path).resolve().is_relative_to(Path(workspace).resolve()):
        raise StackError(f"{Path(path).name} leads outside the stack's folder")
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise StackError(f"no image at {Path(path).name}: {error.strerror}") from None
    with os.fdopen(handle, "rb") as file:
        return file.read()


class Stack:
    def __init__(self, workspace: Path, model: Path, command: list[str] | None = None, prefix: list[str] | None = None):
        """command: another process speaking the same protocol (a benchmark's reference row, run plainly) in
        workspace; prefix: the launch prefix of the stack (default: $ATELIER_CONFINE's)."""
        self.stderr = tempfile.TemporaryFile()
        workspace = Path(workspace).resolve()
        if command is None:
            stack = [sys.executable, str(workspace / ENTRY), "--model", str(Path(model).resolve())]
            command = (launch_prefix() if prefix is None else prefix) + stack
        self.process = subprocess.Popen(
            command, cwd=workspace, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self.read_lines, daemon=True).start()

    def read_lines(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def receive(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise StackError(f"no answer within {timeout:.0f} s") from None
        if line is None:
            raise StackError(f"stack exited with code {self.process.wait()}: {self.stderr_tail()}")
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            raise StackError(f"stack printed a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise StackError(f"stack printed {line[:200]!r}, not a JSON object")
        return message

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict:
        message = self.receive(timeout)
        if message.get("ready") is not True:
            raise StackError(f'expected {{"ready": true}} first, got {str(message)[:200]}')
        return message

    def ask(self, request: dict, timeout: float = REQUEST_TIMEOUT) -> dict:
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise StackError(f"stack exited with code {self.process.wait()}: {self.stderr_tail()}") from None
        answer = self.receive(timeout)
        if answer.get("id") != request["id"]:
            raise StackError(f"answer id {answer.get('id')!r} does not match request {request['id']!r}")
        if "error" in answer:
            raise StackError(f"request {request['id']}: {answer['error']}")
        return answer

    def stderr_tail(self, size: int = 2000) -> str:
        self.stderr.seek(0)
        return one_line(self.stderr.read().decode(errors="replace")[-size:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
