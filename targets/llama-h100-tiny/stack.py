"""An OpenAI-compatible server as a child process (the candidate stack, or vLLM) and a small HTTP client for it.

The candidate starts through the launch prefix in $ATELIER_CONFINE (a JSON list; unset or empty runs it plainly)
and is reached only over HTTP on 127.0.0.1."""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class StackError(Exception):
    pass


def one_line(text: object) -> str:
    """Candidate-derived text as one line, so that it never forges a line of the harness's own."""
    return " ".join(str(text).split())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Start a command that serves on 127.0.0.1:port, wait until GET /v1/models answers, stop it on exit."""

    def __init__(self, command: list[str], port: int, cwd: Path | None = None, ready_timeout: float = 600):
        self.command, self.port, self.cwd, self.ready_timeout = command, port, cwd, ready_timeout
        self.log = tempfile.TemporaryFile(mode="w+")

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True
        )
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def wait_ready(self) -> float:
        started = time.monotonic()
        while time.monotonic() - started < self.ready_timeout:
            if self.process.poll() is not None:
                raise StackError(f"server exited {self.process.returncode} before it was ready: {self.tail()}")
            try:
                get(self.port, "/v1/models", timeout=5)
                return time.monotonic() - started
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)
        raise StackError(f"server not ready after {self.ready_timeout:g} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        self.log.seek(0)
        return one_line(" | ".join(self.log.read().strip().splitlines()[-lines:])[-2000:]) or "(no output)"


def stack_server(stack: Path, model: Path, port: int) -> Server:
    """The candidate, started as the bundle's `serve` line says (python server.py --model MODEL) on our port,
    through the launch prefix."""
    prefix = json.loads(os.environ.get("ATELIER_CONFINE") or "[]")
    stack = Path(stack).resolve()
    command = [sys.executable, str(stack / "server.py"), "--model", str(Path(model).resolve()), "--port", str(port)]
    return Server(prefix + command, port, cwd=stack)


def get(port: int, path: str, timeout: float = 30) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise StackError(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def post(port: int, path: str, body: dict, timeout: float = 600) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise StackError(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)
    finally:
        connection.close()


def stream(port: int, path: str, body: dict, timeout: float | None = 600, opened=lambda sock: None):
    """POST with stream: true; yield (arrival time, event) for each server-sent event until [DONE].
    opened(socket) receives the connected socket first, for a caller that may shut it down from another thread."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.connect()
        opened(connection.sock)
        connection.request("POST", path, json.dumps(body | {"stream": True}), {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise StackError(f"POST {path}: HTTP {response.status}: {response.read()[:300]!r}")
        while line := response.readline():
            text = line.decode().strip()
            if not text.startswith("data:"):
                continue
            data = text.removeprefix("data:").strip()
            if data == "[DONE]":
                return
            yield time.perf_counter(), json.loads(data)
        raise StackError(f"POST {path}: the stream ended without [DONE]")
    finally:
        connection.close()
