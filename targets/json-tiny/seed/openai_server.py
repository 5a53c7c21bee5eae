"""The OpenAI chat completions server the seeds share: validation, errors, SSE, and one engine thread.

A seed's server.py subclasses Stack (its engine, its own request fields, how a job decodes) and calls main(). All
model work (loading, prefill, decoding: MLX arrays, streams, caches and compiled functions belong to the thread that
made them) runs on one engine thread fed by a queue; handler threads parse and validate a request, queue a Job and
relay its text. Jobs run one at a time in arrival order. Between tokens the engine thread stops a job whose client
left (a streamed write failed, or the socket closed while waiting), whose stop string appeared (finish_reason
"stop"), or whose deadline (--deadline seconds after arrival) passed (finish_reason "length", with the text so far).

POST /v1/chat/completions: messages (content a string or text parts), max_completion_tokens or max_tokens (default
256, at most what fits in the model's context beside the prompt), stop (a string or up to 4), stream,
stream_options.include_usage (a final chunk with usage), and the seed's own fields. Decoding is greedy: NEUTRAL's
fields (temperature 0, top_p 1, n 1, no tools, functions, logprobs or penalties) may only be absent or at that
value, and any field not listed here is refused. usage counts the tokens of the templated prompt and the generated
tokens (not SSE chunks). GET /v1/models lists the model.
Errors: 400 (malformed body, unsupported or invalid field, prompt beyond the context: code
"context_length_exceeded"), 404 (unknown route), 413 (body over 8 MB), each with an OpenAI {"error": {...}} body;
an unexpected engine failure is logged with its traceback and answered 500 server_error.
"""

import argparse
import json
import queue
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_MAX_TOKENS = 256
DEFAULT_CONTEXT = 2048
MAX_BODY = 8 << 20
MAX_STOPS = 4
WAIT_S = 0.25
NEUTRAL = {  # a field served with one value only: (that value, why)
    "temperature": (0, "this stack decodes greedily"),
    "top_p": (1, "this stack decodes greedily"),
    "n": (1, "one choice per request"),
    "presence_penalty": (0, "no penalties"),
    "frequency_penalty": (0, "no penalties"),
    "logprobs": (False, "logprobs are not returned"),
    "top_logprobs": (0, "logprobs are not returned"),
    "logit_bias": ({}, "no logit bias"),
    "tools": ([], "tools are not supported"),
    "tool_choice": ("none", "tools are not supported"),
    "functions": ([], "functions are not supported"),
    "function_call": ("none", "functions are not supported"),
}
COMMON = {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "stream", "stream_options", "user",
          "seed", "metadata", "store", "parallel_tool_calls", *NEUTRAL}  # fmt: skip


class RequestError(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


@dataclass
class Chat:
    """A validated request; `own` holds the seed's fields as its Stack.prepare made them."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    stop: list[str]
    stream: bool
    include_usage: bool
    own: dict


@dataclass
class Job:
    chat: Chat
    deadline: float
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    events: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    details: dict = field(default_factory=dict)

    def updates(self, gone: Callable[[], bool]) -> Iterator[tuple[str, str | None, int]]:
        """Yield (text delta, finish_reason or None, completion tokens) until finished; gone() is asked before each
        wait whether the client left (the handler then cancels the job)."""
        while True:
            if gone():
                raise ConnectionAbortedError("the client closed the connection")
            try:
                delta, finish, count = self.events.get(timeout=WAIT_S)
            except queue.Empty:
                continue
            if finish == "error":
                raise EngineError(delta)
            yield delta, finish, count
            if finish:
                return


class EngineError(Exception):
    pass


class Stack:
    """What a seed serves. Subclasses set `fields` (their own request fields) and implement build, prepare, decode."""

    fields: frozenset[str] = frozenset()

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.name = args.model.name
        self.context = context_of(args.model)
        self.tokenizer = None

    def build(self) -> None:
        """Load the engine; runs on the engine thread and sets self.tokenizer."""
        raise NotImplementedError

    def prepare(self, raw: dict) -> dict:
        """The seed's own fields of a request, validated (on a handler thread); raise RequestError to refuse."""
        return {}

    def decode(self, job: Job) -> Iterator[tuple[list[int], str | None]]:
        """Yield (new tokens, finish_reason or None) for the job (on the engine thread); may set job.details."""
        raise NotImplementedError

    def template(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt, add_special_tokens=False))


def context_of(model: Path) -> int:
    try:
        return int(json.loads((model / "config.json").read_text()).get("max_position_embeddings") or DEFAULT_CONTEXT)
    except (OSError, ValueError):
        return DEFAULT_CONTEXT


class Engine:
    """The one thread that runs every job, in arrival order."""

    def __init__(self, stack: Stack, deadline: float):
        self.stack = stack
        self.deadline = deadline
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        threading.Thread(target=self.loop, daemon=True, name="engine").start()

    def submit(self, chat: Chat) -> Job:
        job = Job(chat, time.monotonic() + self.deadline)
        self.jobs.put(job)
        return job

    def loop(self) -> None:
        try:
            self.stack.build()
        except BaseException as error:  # noqa: BLE001 - reported by main, which exits
            self.failure = error
        self.ready.set()
        while self.failure is None:
            job = self.jobs.get()
            try:
                self.run(job)
            except Exception as error:  # noqa: BLE001 - the job fails, the server and the other jobs go on
                log(f"{job.id} failed:\n{traceback.format_exc()}")
                job.events.put((f"generation failed: {type(error).__name__}: {error}", "error", 0))

    def run(self, job: Job) -> None:
        if job.cancelled.is_set():
            return log(f"{job.id} abandoned before it started: the client disconnected")
        if time.monotonic() > job.deadline:
            log(f"{job.id} reached its deadline before it started")
            return job.events.put(("", "length", 0))
        tokens: list[int] = []
        sent = ""
        steps = self.stack.decode(job)
        try:
            for new, finish in steps:
                tokens += new
                text, finish = self.cut(job, self.stack.tokenizer.decode(tokens), finish, len(tokens))
                if job.cancelled.is_set():
                    return log(f"{job.id} abandoned after {len(tokens)} tokens: the client disconnected")
                ready = text if finish else held_back(text, job.chat.stop)
                if len(ready) > len(sent) or finish:
                    job.events.put((ready[len(sent) :], finish, len(tokens)))
                    sent = ready
                if finish:
                    return
            job.events.put(("", "length", len(tokens)))
        finally:
            steps.close()

    def cut(self, job: Job, text: str, finish: str | None, count: int) -> tuple[str, str | None]:
        """The text up to its first stop string, and the finish reason: stop, the decoder's, or the deadline."""
        ends = [at for at in (text.find(stop) for stop in job.chat.stop) if at >= 0]
        if ends:
            return text[: min(ends)], "stop"
        if finish is None and time.monotonic() > job.deadline:
            log(f"{job.id} reached its deadline after {count} tokens")
            return text, "length"
        return text, finish


def held_back(text: str, stops: list[str]) -> str:
    """The text that can be sent now: without an unfinished character or a tail that may begin a stop string."""
    text = text.rstrip("\ufffd")
    begun = [size for stop in stops for size in range(1, len(stop)) if text.endswith(stop[:size])]
    return text[: len(text) - max(begun, default=0)]


class Service:
    """Request validation, on the handler threads."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.lock = threading.Lock()

    def parse(self, body: bytes) -> Chat:
        raw = load_object(body)
        refuse_unsupported(raw, COMMON | self.stack.fields)
        messages = messages_of(raw.get("messages"))
        limit = max_tokens_of(raw)
        stop = stops_of(raw.get("stop"))
        options = raw.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise RequestError("stream_options must be an object", "stream_options")
        with self.lock:
            try:
                prompt = self.stack.template(messages)
            except Exception as error:  # noqa: BLE001 - a template error is the client's malformed messages
                raise RequestError(f"messages could not be formatted: {error}", "messages") from None
            count = self.stack.count(prompt)
        room = self.stack.context - count
        if room < 1 or (limit or 1) > room:
            asked = f" plus max_tokens {limit}" if limit else ""
            raise RequestError(f"the prompt has {count} tokens{asked}: more than the model's context of "
                               f"{self.stack.context} tokens", "messages", code="context_length_exceeded")  # fmt: skip
        own = self.stack.prepare(raw)
        include = bool((options or {}).get("include_usage"))
        limit = limit or min(DEFAULT_MAX_TOKENS, room)
        return Chat(prompt, count, limit, stop, raw.get("stream") is True, include, own)


def load_object(body: bytes) -> dict:
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(f"request body is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise RequestError("request body must be a JSON object")
    return raw


def refuse_unsupported(raw: dict, known: set | frozenset) -> None:
    for name, value in raw.items():
        if name not in known:
            raise RequestError(f"{name} is not supported by this server", name)
        if name in NEUTRAL and value is not None and value != NEUTRAL[name][0]:
            served, why = NEUTRAL[name]
            raise RequestError(f"{name} must be {json.dumps(served)} or absent: {why}", name)


def messages_of(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    plain = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and all(is_text_part(part) for part in content):
            content = "".join(part["text"] for part in content)
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(content, str):
            raise RequestError(f"messages[{i}] must have a role and a text content", f"messages[{i}]")
        plain.append({"role": message["role"], "content": content})
    return plain


def is_text_part(part) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def max_tokens_of(raw: dict) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = raw.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RequestError(f"{name} must be a positive integer", name)
            return value
    return None


def stops_of(stop) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise RequestError(f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them", "stop")
    return stops


class Handler(BaseHTTPRequestHandler):
    service: Service
    engine: Engine

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self.fail(RequestError(f"no route GET {self.path}", status=404))
        model = {"id": self.service.stack.name, "object": "model", "created": 0, "owned_by": "atelier"}
        self.send_json({"object": "list", "data": [model]})

    def do_POST(self) -> None:
        try:
            if self.path.rstrip("/") != "/v1/chat/completions":
                raise RequestError(f"no route POST {self.path}", status=404)
            job = self.engine.submit(self.service.parse(self.body()))
        except RequestError as error:
            return self.fail(error)
        try:
            self.stream(job) if job.chat.stream else self.answer(job)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            job.cancelled.set()
            self.close_connection = True

    def body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError("Content-Length is not a number") from None
        if length > MAX_BODY:
            raise RequestError(f"the request body is over {MAX_BODY >> 20} MB", status=413)
        return self.rfile.read(length)

    def answer(self, job: Job) -> None:
        content, finish_reason, count = "", "length", 0
        try:
            for delta, finish, sofar in job.updates(self.gone):
                content, finish_reason, count = content + delta, finish or finish_reason, sofar
        except EngineError as error:
            return self.fail(RequestError(str(error), status=500))
        message = {"role": "assistant", "content": content}
        choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        self.send_json(head(job, "chat.completion") | {"choices": [choice], "usage": usage(job, count)})

    def stream(self, job: Job) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = head(job, "chat.completion.chunk")
        self.event(chunk | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        count = 0
        try:
            for delta, finish, sofar in job.updates(self.gone):
                count = sofar
                choice = {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": finish}
                self.event(chunk | {"choices": [choice]})
        except EngineError as error:
            self.event({"error": {"message": str(error), "type": "server_error", "param": None, "code": None}})
        if job.chat.include_usage:
            self.event(chunk | {"choices": [], "usage": usage(job, count)})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def gone(self) -> bool:
        """Whether the client closed its connection (readable, with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def event(self, message: dict) -> None:
        self.wfile.write(f"data: {json.dumps(message)}\n\n".encode())
        self.wfile.flush()

    def fail(self, error: RequestError) -> None:
        kinds = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error"}
        body = {"message": str(error), "type": kinds.get(error.status, "server_error"), "param": error.param}
        self.send_json({"error": body | {"code": error.code}}, error.status)

    def send_json(self, message: dict, status: int = 200) -> None:
        body = json.dumps(message).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log(f"{self.address_string()} {format % args}")


def head(job: Job, kind: str) -> dict:
    return {"id": job.id, "object": kind, "created": job.created, "model": Handler.service.stack.name}


def usage(job: Job, completion: int) -> dict:
    prompt = job.chat.prompt_tokens
    counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return counts | ({"completion_tokens_details": job.details} if job.details else {})


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def arguments(doc: str, model_help: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help=model_help)
    parser.add_argument("--draft", type=Path, help="draft model folder with the same tokenizer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=8000, type=int, help="0 picks a free port")
    parser.add_argument("--deadline", default=300.0, type=float, help="seconds a request may take from its arrival")
    return parser


def main(stack: Stack) -> None:
    """Build the stack on the engine thread, then serve; prints {"ready": true, "port": N} once serving."""
    engine = Engine(stack, stack.args.deadline)
    engine.ready.wait()
    if engine.failure is not None:
        raise SystemExit(f"the engine could not be built: {engine.failure!r}")
    Handler.service, Handler.engine = Service(stack), engine
    server = Server((stack.args.host, stack.args.port), Handler)
    print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
    server.serve_forever()
