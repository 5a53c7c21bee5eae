"""Serve the stack over the OpenAI chat completions API, with predicted outputs.

python server.py --model DIR [--host 127.0.0.1] [--port 8000]
POST /v1/chat/completions with messages, optional prediction {"type": "content", "content": "..."} (a string or
a list of {"type": "text", "text": ...} parts), max_tokens / max_completion_tokens (default 256), stream; GET
/v1/models. Decoding is greedy: a temperature other than 0 is refused. usage.completion_tokens_details reports
accepted_prediction_tokens and rejected_prediction_tokens (predicted tokens not accepted). Requests run one at a time.
"""

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
        try:
            raw = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(f"request body is not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise RequestError("request body must be a JSON object")
        messages = raw.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list", "messages")
        if raw.get("temperature") not in (None, 0, 0.0):
            raise RequestError("this stack decodes greedily: temperature must be 0 or absent", "temperature")
        max_tokens = raw.get("max_completion_tokens") or raw.get("max_tokens") or DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens must be a positive integer", "max_tokens")
        with self.lock:
            try:
                prompt = self.engine.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
                )
            except Exception as error:  # noqa: BLE001 - a template error is the client's malformed messages
                raise RequestError(f"messages could not be formatted: {error}", "messages") from None
            prompt_tokens = len(self.engine.encode(prompt))
        job = {"prompt": prompt, "prediction": prediction_of(raw.get("prediction")), "max_tokens": max_tokens}
        options = raw.get("stream_options") if isinstance(raw.get("stream_options"), dict) else {}
        return job | {"stream": bool(raw.get("stream")), "include_usage": bool(options.get("include_usage")),
                      "prompt_tokens": prompt_tokens}  # fmt: skip

    def chunks(self, job: dict, stats):
        """Yield (text delta, finish_reason or None, completion tokens so far)."""
        tokens, sent = [], ""
        with self.lock:
            for new, finish_reason in self.engine.stream(job["prompt"], job["prediction"], job["max_tokens"], stats):
                tokens += new
                text = self.engine.tokenizer.decode(tokens)
                if finish_reason is None and text.endswith("\ufffd"):
                    continue
                yield text[len(sent) :], finish_reason, len(tokens)
                sent = text


def prediction_of(prediction) -> str:
    if prediction is None:
        return ""
    if not isinstance(prediction, dict) or prediction.get("type") != "content":
        raise RequestError('prediction must be {"type": "content", "content": ...}', "prediction")
    content = prediction.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [None]
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        raise RequestError("prediction.content must be a string or a list of text parts", "prediction")
    return "".join(p["text"] for p in parts)


class Handler(BaseHTTPRequestHandler):
    service: Service

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self.fail(RequestError(f"no route GET {self.path}", status=404))
        model = {"id": self.service.name, "object": "model", "created": 0, "owned_by": "atelier"}
        self.send_json({"object": "list", "data": [model]})

    def do_POST(self) -> None:
        from engine import Stats

        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.fail(RequestError(f"no route POST {self.path}", status=404))
        try:
            job = self.service.parse(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except RequestError as error:
            return self.fail(error)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.service.name}
        stats = Stats()
        if job["stream"]:
            return self.stream(job, head, stats)
        content, finish_reason, count = "", "length", 0
        for delta, finish, sofar in self.service.chunks(job, stats):
            content, count = content + delta, sofar
            finish_reason = finish or finish_reason
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        self.send_json(head | {"object": "chat.completion", "choices": [choice | {"logprobs": None}],
                               "usage": usage(job["prompt_tokens"], count, stats)})  # fmt: skip

    def stream(self, job: dict, head: dict, stats) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        head = head | {"object": "chat.completion.chunk"}
        self.event(head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        count = 0
        for delta, finish_reason, sofar in self.service.chunks(job, stats):
            count = sofar
            if delta or finish_reason:
                choice = {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": finish_reason}
                self.event(head | {"choices": [choice]})
        if job["include_usage"]:
            self.event(head | {"choices": [], "usage": usage(job["prompt_tokens"], count, stats)})
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


def usage(prompt: int, completion: int, stats) -> dict:
    rejected = max(stats.predicted - stats.accepted, 0)
    details = {"accepted_prediction_tokens": stats.accepted, "rejected_prediction_tokens": rejected}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "completion_tokens_details": details}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="mlx-lm model folder")
    parser.add_argument("--draft", default="", help="draft model folder (unused by this stack)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=8000, type=int, help="0 picks a free port")
    args = parser.parse_args()
    from serve import build_engine

    Handler.service = Service(build_engine(args.model, Knobs.read()), args.model.name)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
