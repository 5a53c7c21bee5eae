"""The json-tiny workload: cases read from a folder or a JSONSchemaBench checkout, and a client for a stack process."""

import copy
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

ENTRY = "serve.py"
SYSTEM = "Reply with one JSON value that matches this JSON schema, and nothing else."
BENCH_REQUEST = "Give a realistic example."
STRING_CHARS = 32
ARRAY_ITEMS = 3
OBJECT_KEYS = 4
SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SUBSCHEMAS = ("items", "prefixItems", "additionalItems", "additionalProperties", "contains", "not", "if", "then",
              "else", "anyOf", "oneOf", "allOf")  # fmt: skip
CONFINE = "ATELIER_CONFINE"
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

    @property
    def grammar(self) -> dict:
        return bounded(self.schema)

    def request(self) -> dict:
        return {"id": self.name, "prompt": self.prompt, "schema": self.grammar, "max_tokens": self.max_tokens}


def bounded(schema: dict) -> dict:
    """The schema as every constrained row decodes it (the workload's grammar setting; outputs are validated
    against the schema itself). Greedy decoding by a small model loops inside free-form values until max_tokens,
    so free strings get at most STRING_CHARS characters, arrays ARRAY_ITEMS items and open objects OBJECT_KEYS
    keys, never below the schema's own minimums. A required key that the properties do not declare is declared
    with the additionalProperties schema (any value by default), since xgrammar's strict mode would drop it.
    Every value valid under the bounded schema is valid under the schema."""
    schema = copy.deepcopy(schema)
    _bound(schema)
    return schema


def _bound(node) -> None:
    if not isinstance(node, dict):
        return
    types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
    if "string" in types and not {"enum", "const", "format", "pattern"} & node.keys():
        _cap(node, "minLength", "maxLength", STRING_CHARS)
    if "array" in types:
        _cap(node, "minItems", "maxItems", ARRAY_ITEMS)
    if "object" in types and (node.get("additionalProperties", False) is not False or "patternProperties" in node):
        _cap(node, "minProperties", "maxProperties", max(OBJECT_KEYS, len(node.get("required", []))))
    _declare_required(node)
    for child in _children(node):
        _bound(child)


def _children(node: dict):
    for key in SUBSCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            yield from node[key].values()
    for key in SUBSCHEMAS:
        value = node.get(key)
        yield from value if isinstance(value, list) else [value]


def _cap(node: dict, low: str, high: str, limit: int) -> None:
    floor = node.get(low, 0) if isinstance(node.get(low), int) else 0
    node[high] = min(node.get(high, limit), max(limit, floor)) if isinstance(node.get(high, 0), int) else limit


def _declare_required(node: dict) -> None:
    properties, extra = node.get("properties"), node.get("additionalProperties", {})
    if not isinstance(properties, dict) or extra is False or not isinstance(node.get("required"), list):
        return
    for key in node["required"]:
        if isinstance(key, str) and key not in properties:
            properties[key] = copy.deepcopy(extra) if isinstance(extra, dict) else {}


def load_cases(folder: Path, model: Path | None = None) -> list[Case]:
    """The cases in folder; given a model folder, prompts of cases with messages are rendered anew with that
    model's chat template."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json cases in {folder}")
    cases = [read_case(path) for path in files]
    if model is not None and any(case.messages for case in cases):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
        for case in cases:
            case.prompt = render(tokenizer, case.messages) if case.messages else case.prompt
    return cases


def read_case(path: Path) -> Case:
    raw = json.loads(path.read_text())
    return Case(path.stem, raw["prompt"], raw["schema"], int(raw["max_tokens"]), raw.get("messages", []))


def messages_for(schema: dict, request: str) -> list[dict]:
    """The schema goes in the system message, compact, so an unconstrained model can follow it too."""
    compact = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    system = f"{SYSTEM}\n{compact}"
    return [{"role": "system", "content": system}, {"role": "user", "content": request}]


def render(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def case_for(name: str, schema: dict, request: str, max_tokens: int, tokenizer) -> Case:
    messages = messages_for(schema, request)
    return Case(name, render(tokenizer, messages), schema, max_tokens, messages)


@dataclass
class Skipped:
    name: str
    reason: str


def jsonschemabench(
    root: Path, tokenizer, per_split: int, max_chars: int, max_tokens: int
) -> tuple[list[Case], list[Skipped]]:
    """Cases from a JSONSchemaBench checkout (data/<split>/*.json, or <split>/*.json), spread evenly over the splits.

    Each split contributes its per_split smallest schemas (by compact size, ties by file name); schemas longer
    than max_chars are skipped with the reason, as are files that are not JSON objects.
    """
    root = Path(root)
    data = root / "data" if (root / "data").is_dir() else root
    splits = sorted(p for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
    if not splits:
        raise FileNotFoundError(f"no JSONSchemaBench splits (folders of *.json) under {root}")
    cases, skipped = [], []
    for split in splits:
        sized = []
        for path in sorted(split.glob("*.json")):
            name = f"{split.name}/{path.stem}"
            try:
                schema = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                skipped.append(Skipped(name, f"not JSON: {error}"))
                continue
            if not isinstance(schema, dict):
                skipped.append(Skipped(name, "not a JSON object"))
                continue
            sized.append((len(json.dumps(schema, separators=(",", ":"))), name, schema))
        sized.sort(key=lambda item: item[:2])
        taken = [item for item in sized if item[0] <= max_chars][:per_split]
        skipped += [
            Skipped(name, f"schema is {size} chars, over {max_chars}") for size, name, _ in sized if size > max_chars
        ]
        cases += [case_for(name, schema, BENCH_REQUEST, max_tokens, tokenizer) for _, name, schema in taken]
    return cases, skipped


def one_line(text) -> str:
    """Text a stack wrote, safe to print inside a harness line: it can never start a line of its own."""
    return " ".join(str(text).split())


def checked_sample(items: list, random) -> list:
    """The timed answers a benchmark checks: at least 2 or a quarter of them, all when there are fewer."""
    return random.sample(items, min(len(items), max(2, math.ceil(len(items) / 4))))


def launch_prefix(env=None) -> list[str]:
    """The argv prefix Atelier names in $ATELIER_CONFINE to start a candidate confined (empty: run it plainly)."""
    prefix = json.loads((os.environ if env is None else env).get(CONFINE) or "[]")
    if not isinstance(prefix, list) or not all(isinstance(arg, str) for arg in prefix):
        raise ValueError(f"${CONFINE} is not a JSON list of strings")
    return prefix


class StackError(RuntimeError):
    pass


class Stack:
    """A stack process speaking the JSON-lines protocol: serve.py in a workspace, or any command given, started
    through the launch prefix its environment names (launch_prefix); its stderr goes to a temporary file."""

    def __init__(
        self, workspace: Path, model: Path, draft: Path | None = None, command: list[str] | None = None, env=None
    ):
        self.stderr = tempfile.TemporaryFile()
        workspace = Path(workspace).resolve()
        if command is None:
            command = [sys.executable, str(workspace / ENTRY), "--model", str(Path(model).resolve())]
            command += ["--draft", str(Path(draft).resolve())] if draft else []
        self.process = subprocess.Popen(
            launch_prefix(env) + command,
            cwd=workspace,
            env=env,
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
            message = json.loads(line)
        except json.JSONDecodeError:
            raise StackError(f"stack printed a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise StackError(f"stack printed a line that is not a JSON object: {line[:200]!r}")
        return message

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
