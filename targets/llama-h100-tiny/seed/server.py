"""Serve the stack over the OpenAI API: POST /v1/chat/completions and /v1/completions, streamed or not.

python server.py --model DIR [--host 127.0.0.1] [--port 8000]   (--port 0 picks a free port)
Prints {"ready": true, "port": N} on stdout once the model is loaded. Decoding is greedy: temperature must be
absent or 0. Extensions (as in vLLM): "ignore_eos": true decodes to max_tokens; "return_token_ids": true adds
each choice's "token_ids". "stream_options": {"include_usage": true} ends a stream with a usage chunk.
Errors are 400/404/500 with an OpenAI-style {"error": {...}} body.
"""

import argparse
import json
import select
import socket
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from engine import Engine
from knobs import Knobs

DEFAULT_MAX_TOKENS = 16
ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "text"}


class RequestError(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


class Service:
    def __init__(self, engine: Engine, tokenizer, name: str):
        self.engine = engine
        self.tokenizer = tokenizer
        self.name = name

    def parse(self, kind: str, body: bytes) -> dict:
        try:
            raw = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(f"request body is not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise RequestError("request body must be a JSON object")
        if raw.get("temperature") not in (None, 0, 0.0):
            raise RequestError("only greedy decoding is served: temperature must be 0 or absent", "temperature")
        if raw.get("n") not in (None, 1):
            raise RequestError("n must be 1", "n")
        max_tokens = raw.get("max_completion_tokens") or raw.get("max_tokens") or DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens must be a positive integer", "max_tokens")
        prompt = self.chat_prompt(raw.get("messages")) if kind == "chat" else self.text_prompt(raw.get("prompt"))
        options = raw.get("stream_options") or {}
        return {
            "kind": kind, "prompt": prompt, "max_tokens": max_tokens, "stream": bool(raw.get("stream")),
            "usage": bool(options.get("include_usage")), "ignore_eos": bool(raw.get("ignore_eos")),
            "token_ids": bool(raw.get("return_token_ids")),
        }  # fmt: skip

    def chat_prompt(self, messages) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list", "messages")
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # noqa: BLE001 - a template error is the client's malformed messages
            raise RequestError(f"messages could not be formatted: {error}", "messages") from None
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def text_prompt(self, prompt) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise RequestError("prompt must be a non-empty string", "prompt")
        return self.tokenizer(prompt).input_ids

    def chunks(self, job: dict, gone=lambda: False):
        """Yield (text delta, finish_reason or None, tokens so far)."""
        request = self.engine.submit(job["prompt"], job["max_tokens"], job["ignore_eos"])
        tokens, sent = [], ""
        for token, finish in request.results(gone):
            if token is not None:
                tokens.append(token)
            text = self.tokenizer.decode(tokens)
            if finish is None and text.endswith("\ufffd"):
                continue
            yield text[len(sent) :], finish, tokens
            sent = text


class Handler(BaseHTTPRequestHandler):
    service: Service
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self.fail(RequestError(f"no route GET {self.path}", status=404))
        model = {"id": self.service.name, "object": "model", "created": 0, "owned_by": "atelier"}
        self.send_json({"object": "list", "data": [model]})

    def do_POST(self) -> None:
        kind = ROUTES.get(self.path.rstrip("/"))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if kind is None:
                raise RequestError(f"no route POST {self.path}", status=404)
            job = self.service.parse(kind, body)
        except RequestError as error:
            return self.fail(error)
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        head = {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.service.name}
        try:
            if job["stream"]:
                return self.stream(job, head)
            self.answer(job, head)
        except (ConnectionAbortedError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # noqa: BLE001 - the engine's failure goes back to this client
            self.fail(RequestError(f"generation failed: {error}", status=500))

    def answer(self, job: dict, head: dict) -> None:
        content, finish_reason, tokens = "", "length", []
        for delta, finish, sofar in self.service.chunks(job, self.gone):
            content, tokens = content + delta, sofar
            finish_reason = finish or finish_reason
        choice = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
        if job["kind"] == "chat":
            choice["message"] = {"role": "assistant", "content": content}
        else:
            choice["text"] = content
        if job["token_ids"]:
            choice["token_ids"] = list(tokens)
        kind = "chat.completion" if job["kind"] == "chat" else "text_completion"
        self.send_json(head | {"object": kind, "choices": [choice], "usage": usage(job, len(tokens))})

    def stream(self, job: dict, head: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chat = job["kind"] == "chat"
        head = head | {"object": "chat.completion.chunk" if chat else "text_completion"}
        if chat:
            self.event(head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        count, seen = 0, 0
        for delta, finish_reason, tokens in self.service.chunks(job, self.gone):
            count = len(tokens)
            if not (delta or finish_reason):
                continue
            choice = {"index": 0, "finish_reason": finish_reason}
            if chat:
                choice["delta"] = {"content": delta} if delta else {}
            else:
                choice["text"] = delta
            if job["token_ids"]:
                choice["token_ids"], seen = tokens[seen:], count
            self.event(head | {"choices": [choice]})
        if job["usage"]:
            self.event(head | {"choices": [], "usage": usage(job, count)})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def gone(self) -> bool:
        """Whether the client closed its connection (readable, with nothing to read)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)

    def event(self, message: dict) -> None:
        self.wfile.write(f"data: {json.dumps(message)}\n\n".encode())
        self.wfile.flush()

    def fail(self, error: RequestError) -> None:
        kinds = {400: "invalid_request_error", 404: "not_found_error"}
        body = {"message": str(error), "type": kinds.get(error.status, "server_error"), "param": error.param}
        self.send_json({"error": body | {"code": None}}, error.status)

    def send_json(self, message: dict, status: int = 200) -> None:
        body = json.dumps(message).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of open-loop arrivals waits to be accepted instead of being reset


def usage(job: dict, completion: int) -> dict:
    prompt = len(job["prompt"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="Hugging Face model folder (llama)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=8000, type=int, help="0 picks a free port")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    knobs = Knobs.read()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    Handler.service = Service(Engine(args.model, knobs), tokenizer, args.model.name)
    server = Server((args.host, args.port), Handler)
    print(json.dumps({"ready": True, "port": server.server_address[1], "knobs": vars(knobs)}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
