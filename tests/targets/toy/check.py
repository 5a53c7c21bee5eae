"""The toy checker: the candidate's greedy tokens must equal the reference's for every prompt.

The candidate (decode.py in --stack) is started through the launch prefix in $ATELIER_CONFINE and spoken to in
JSON lines; it never sees the inputs or the cache."""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


class Stack:
    def __init__(self, stack: str, model: str):
        launch = json.loads(os.environ.get("ATELIER_CONFINE") or "[]")
        self.stderr = tempfile.TemporaryFile()
        argv = [*launch, sys.executable, str(Path(stack) / "decode.py"), "--model", model]
        self.process = subprocess.Popen(
            argv, cwd=stack, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        self.receive()

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self.fail(f"decode.py answered {line[:80]!r}")

    def ask(self, n: int, prompt: list[int], max_tokens: int) -> list[int]:
        try:
            self.process.stdin.write(json.dumps({"id": n, "prompt": prompt, "max_tokens": max_tokens}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.fail("decode.py exited")
        answer = self.receive()
        return answer.get("tokens") if answer.get("id") == n else None

    def fail(self, what: str) -> None:
        self.process.kill()
        self.stderr.seek(0)
        last = (self.stderr.read().decode(errors="replace").strip().splitlines() or ["no error output"])[-1]
        print(f"CHECK FAIL {what}: {' '.join(last[-300:].split())}")
        sys.exit(1)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def reference(model: str, inputs: str, cache: str) -> list[list[int]]:
    key = hashlib.sha256((Path(inputs) / "prompts.json").read_bytes()).hexdigest()[:16]
    cached = Path(cache) / f"reference-{key}.json"
    if not cached.exists():
        command = [sys.executable, str(HERE / "reference" / "reference.py"), model, inputs]
        out = subprocess.run(command, capture_output=True, text=True, timeout=100, check=True)
        cached.write_text(json.dumps([json.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]))
    return json.loads(cached.read_text())


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("stack", "model", "inputs", "cache"):
        p.add_argument(f"--{name}", required=True)
    a = p.parse_args()
    expected = reference(a.model, a.inputs, a.cache)
    work = json.loads((Path(a.inputs) / "prompts.json").read_text())
    stack = Stack(a.stack, a.model)
    got = [stack.ask(i, prompt, work["max_tokens"]) for i, prompt in enumerate(work["prompts"])]
    failures = [i for i, tokens in enumerate(got) if tokens != expected[i]]
    stack.close()
    for i in failures:
        print(f"CHECK FAIL prompt {i}: tokens differ from the reference")
    print("CHECK PASS" if not failures else "")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
