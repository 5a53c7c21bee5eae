"""Serve the stack over the OpenAI chat completions API, constrained to a JSON schema.

python server.py --model DIR [--draft DIR] [--host 127.0.0.1] [--port 8000]
POST /v1/chat/completions with response_format {"type": "json_schema", "json_schema": {"schema": {...}}},
streamed (SSE chat.completion.chunk) or not; GET /v1/models. Requests (and their parsing) run one at a time.
Errors are 400/404 with an OpenAI-style {"error": {...}} body. A reply cut by max_tokens (default 256)
has finish_reason "length" and its content is the JSON so far, possibly incomplete.
"""

import argparse
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import blas
from knobs import Knobs

DEFAULT_MAX_TOKENS = 256


class RequestError(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


class Service:
    def __init__(self, engine, name: str):
        self.engine = engine
        self.name = name
        self.lock = threading.Lock()

    def parse(self, body: bytes) -> dict:
        with self.lock:
            return self.parse_locked(body)

    def parse_locked(self, body: bytes) -> dict:
        try:
            raw = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(f"request body is not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise RequestError("request body must be a JSON object")
        messages = raw.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list", "messages")
        schema = schema_of(raw.get("response_format"))
        max_tokens = raw.get("max_completion_tokens") or raw.get("max_tokens") or DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens must be a positive integer", "max_tokens")
        try:
            prompt = self.engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # noqa: BLE001 - a template error is the client's malformed messages
            raise RequestError(f"messages could not be formatted: {error}", "messages") from None
        try:
            constraint = self.engine.constraint(schema)
        except Exception as error:  # noqa: BLE001 - xgrammar raises several types for bad schemas
            reason = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(error).strip())
            raise RequestError(f"the JSON schema could not be compiled: {reason}", "response_format") from None
        return {"prompt": prompt, "constraint": constraint, "max_tokens": max_tokens, "stream": bool(raw.get("stream"))}

    def chunks(self, job: dict):
        """Yield (text delta, finish_reason or None, completion tokens so far)."""
        tokens, sent = [], ""
        with self.lock:
            for new, finish_reason in self.engine.stream(job["prompt"], job["constraint"], job["max_tokens"]):
                tokens += new
                text = self.engine.tokenizer.decode(tokens)
                if finish_reason is None and text.endswith("\ufffd"):
                    continue
                yield text[len(sent) :], finish_reason, len(tokens)
                sent = text

    def prompt_tokens(self, job: dict) -> int:
        with self.lock:
            return len(self.engine.tokenizer.encode(job["prompt"], add_special_tokens=False))


def schema_of(response_format) -> dict:
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        raise RequestError('response_format must be {"type": "json_schema", "json_schema": {...}}', "response_format")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise RequestError("response_format.json_schema.schema must be a JSON schema object", "response_format")
    return schema


class Handler(BaseHTTPRequestHandler):
    service: Service

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self.fail(RequestError(f"no route GET {self.path}", status=404))
        model = {"id": self.service.name, "object": "model", "created": 0, "owned_by": "atelier"}
        self.send_json({"object": "list", "data": [model]})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.fail(RequestError(f"no route POST {self.path}", status=404))
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            job = self.service.parse(body)
        except RequestError as error:
            return self.fail(error)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.service.name}
        if job["stream"]:
            return self.stream(job, head)
        content, finish_reason, count = "", "length", 0
        for delta, finish, sofar in self.service.chunks(job):
            content, count = content + delta, sofar
            finish_reason = finish or finish_reason
        prompt = self.service.prompt_tokens(job)
        message = {"role": "assistant", "content": content}
        self.send_json(
            head
            | {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count},
            }
        )

    def stream(self, job: dict, head: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        head = head | {"object": "chat.completion.chunk"}
        self.event(head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for delta, finish_reason, _ in self.service.chunks(job):
            if delta or finish_reason:
                choice = {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": finish_reason}
                self.event(head | {"choices": [choice]})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def event(self, message: dict) -> None:
        self.wfile.write(f"data: {json.dumps(message)}\n\n".encode())
        self.wfile.flush()

    def fail(self, error: RequestError) -> None:
        kind = "invalid_request_error" if error.status == 400 else "not_found_error"
        body = {"message": str(error), "type": kind, "param": error.param, "code": None}
        self.send_json({"error": body}, error.status)

    def send_json(self, message: dict, status: int = 200) -> None:
        body = json.dumps(message).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        print(f"{self.address_string()} {format % args}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="mlx-lm model folder")
    parser.add_argument("--draft", type=Path, help="mlx-lm folder of a draft model with the same tokenizer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=8000, type=int, help="0 picks a free port")
    args = parser.parse_args()
    knobs = Knobs.read()
    blas.select(knobs.blas)
    from serve import build_engine

    Handler.service = Service(build_engine(args.model, knobs, args.draft), args.model.name)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
