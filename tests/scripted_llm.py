"""A scripted OpenAI-compatible endpoint for tests: a real HTTP server on 127.0.0.1 that answers each
POST /v1/chat/completions with the next scripted reply for the request's model, and records every request."""

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    message: dict = field(default_factory=dict)
    status: int = 200
    tokens: tuple[int, int] = (120, 30)
    delay_s: float = 0.0


@dataclass
class Request:
    headers: dict[str, str]  # names in lower case
    body: dict

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def text(self) -> str:
        """The first user message: the round's context."""
        return next(m["content"] for m in self.body["messages"] if m["role"] == "user")

    def tool_results(self) -> list[str]:
        return [m["content"] for m in self.body["messages"] if m["role"] == "tool"]


_ids = itertools.count(1)


def raw(name: str, arguments: str, said: str | None = None, tokens: tuple[int, int] = (120, 30)) -> Reply:
    """An assistant message calling one tool with `arguments` sent as they are (maybe not JSON at all)."""
    call = {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": arguments}}
    return Reply({"role": "assistant", "content": said, "tool_calls": [call]}, tokens=tokens)


def call(name: str, said: str | None = None, tokens: tuple[int, int] = (120, 30), **args) -> Reply:
    return raw(name, json.dumps(args), said, tokens)


def say(text: str) -> Reply:
    return Reply({"role": "assistant", "content": text})


def status(code: int) -> Reply:
    return Reply(status=code)


def late(seconds: float) -> Reply:
    return Reply(say("too late").message, delay_s=seconds)


class ScriptedLLM:
    def __init__(self):
        self.script: dict[str, list[Reply | Callable[[Request], Reply]]] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def add(self, model: str, *replies: Reply | Callable[[Request], Reply]) -> None:
        """Replies in order; a callable makes its reply from the request it answers."""
        self.script.setdefault(model, []).extend(replies)

    def left(self) -> dict[str, int]:
        return {model: len(replies) for model, replies in self.script.items() if replies}

    def to(self, model: str) -> list[Request]:
        return [r for r in self.requests if r.model == model]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            replies = self.script.get(request.model, [])
            reply = replies.pop(0) if replies else Reply(status=400)
        return reply(request) if callable(reply) else reply

    def _handler(self):
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = llm._next(Request({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(reply.delay_s)
                if reply.status != 200:
                    error = {"message": f"scripted HTTP {reply.status} for model {body['model']}", "type": "scripted"}
                    return self._send(reply.status, {"error": error})
                tokens_in, tokens_out = reply.tokens
                self._send(200, {
                    "id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": reply.message, "finish_reason": "tool_calls"}],
                    "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                              "total_tokens": tokens_in + tokens_out},
                })  # fmt: skip

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        return Handler
