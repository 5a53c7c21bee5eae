"""The json-tiny workload: cases read from a folder, and a client for a candidate stack process."""

import json
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

ENTRY = "serve.py"
READY_TIMEOUT = 300.0
REQUEST_TIMEOUT = 300.0
WARMUP = {
    "id": "warmup",
    "prompt": "<|im_start|>system\nReply with JSON only.<|im_end|>\n<|im_start|>user\n"
    "Is water wet?<|im_end|>\n<|im_start|>assistant\n",
    "schema": {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]},
    "max_tokens": 8,
}


@dataclass
class Case:
    name: str
    prompt: str
    schema: dict
    max_tokens: int
    messages: list

    def request(self) -> dict:
        return {"id": self.name, "prompt": self.prompt, "schema": self.schema, "max_tokens": self.max_tokens}


def load_cases(folder: Path) -> list[Case]:
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json cases in {folder}")
    return [read_case(path) for path in files]


def read_case(path: Path) -> Case:
    raw = json.loads(path.read_text())
    return Case(path.stem, raw["prompt"], raw["schema"], int(raw["max_tokens"]), raw.get("messages", []))


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, workspace: Path, model: Path):
        self.stderr = tempfile.TemporaryFile()
        workspace = Path(workspace).resolve()
        command = [sys.executable, str(workspace / ENTRY), "--model", str(Path(model).resolve())]
        self.process = subprocess.Popen(
            command,
            cwd=workspace,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
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
            return json.loads(line)
        except json.JSONDecodeError:
            raise StackError(f"stack printed a line that is not JSON: {line[:200]!r}") from None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        message = self.receive(timeout)
        if message.get("ready") is not True:
            raise StackError(f'expected {{"ready": true}} first, got {str(message)[:200]}')

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
        return self.stderr.read().decode(errors="replace")[-size:].strip()

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
