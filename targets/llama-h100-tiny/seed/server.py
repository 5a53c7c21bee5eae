"""Serve the stack over the OpenAI API: POST /v1/chat/completions and /v1/completions, streamed or not.

python server.py --model DIR [--host 127.0.0.1] [--port 8000] [--deadline 300]   (--port 0 picks a free port)
Prints {"ready": true, "port": N} on stdout once the model is loaded. The engine's own thread batches the requests
(engine.py). Decoding is greedy: temperature must be absent or 0, n 1; tools, logprobs, response_format other than
text and any field not listed here are a 400 naming the field (the checks are openai_server.py's, shared with the
other seeds). max_tokens / max_completion_tokens (default 16) plus the prompt must fit in the model's context
(max_position_embeddings). stop (a string or up to 4) ends the text before it, finish_reason "stop". Extensions
(as in vLLM): "ignore_eos": true decodes to max_tokens; "return_token_ids": true adds each choice's "token_ids".
"stream_options": {"include_usage": true} ends a stream with a usage chunk. A request whose client closed its
connection is cancelled at the next token; one past its deadline ends with finish_reason "length".
Errors are 400/404/413 with an OpenAI-style {"error": {...}} body (500 only if the engine itself fails).
"""

import json
import time
import uuid
from http.server import ThreadingHTTPServer

import openai_server
from engine import Engine
from knobs import Knobs
from openai_server import (
    COMMON,
    RequestError,
    arguments,
    context_of,
    held_back,
    load_object,
    max_tokens_of,
    messages_of,
    refuse_unsupported,
    stops_of,
)

DEFAULT_MAX_TOKENS = 16
ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "text"}
OWN = {"ignore_eos", "return_token_ids", "response_format", "prompt"}


class Service:
    def __init__(self, engine: Engine, tokenizer, name: str, context: int, deadline: float):
        self.engine = engine
        self.tokenizer = tokenizer
        self.name = name
        self.context = context
        self.deadline = deadline

    def parse(self, kind: str, body: bytes) -> dict:
        raw = load_object(body)
        refuse_unsupported(raw, (COMMON | OWN) - ({"messages"} if kind == "text" else {"prompt"}))
        if (raw.get("response_format") or {"type": "text"}) != {"type": "text"}:
            raise RequestError("response_format is not supported: this stack answers in plain text", "response_format")
        max_tokens = max_tokens_of(raw) or DEFAULT_MAX_TOKENS
        stop = stops_of(raw.get("stop"))
        prompt = self.chat_prompt(raw.get("messages")) if kind == "chat" else self.text_prompt(raw.get("prompt"))
        if len(prompt) + max_tokens > self.context:
            raise RequestError(f"the prompt has {len(prompt)} tokens plus max_tokens {max_tokens}: more than the "
                               f"model's context of {self.context} tokens", "messages" if kind == "chat" else "prompt",
                               code="context_length_exceeded")  # fmt: skip
        options = raw.get("stream_options") if isinstance(raw.get("stream_options"), dict) else {}
        return {
            "kind": kind, "prompt": prompt, "max_tokens": max_tokens, "stream": raw.get("stream") is True,
            "usage": bool(options.get("include_usage")), "ignore_eos": bool(raw.get("ignore_eos")),
            "token_ids": bool(raw.get("return_token_ids")), "stop": stop, "deadline": time.monotonic() + self.deadline,
        }  # fmt: skip

    def chat_prompt(self, messages) -> list[int]:
        messages = messages_of(messages)
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
        """Yield (text delta, finish_reason or None, tokens so far). Before each token, a client gone raises
        ConnectionAbortedError; the request is cancelled when this generator ends, as at a stop string or the
        deadline."""
        request = self.engine.submit(job["prompt"], job["max_tokens"], job["ignore_eos"])
        tokens, sent = [], ""
        for token, finish in request.results(gone):
            if gone():
                raise ConnectionAbortedError("the client closed the connection")
            if token is not None:
                tokens.append(token)
            text, finish = cut(job, self.tokenizer.decode(tokens), finish)
            ready = text if finish else held_back(text, job["stop"])
            if len(ready) > len(sent) or finish:
                yield ready[len(sent) :], finish, tokens
                sent = ready
            if finish:
                return


def cut(job: dict, text: str, finish: str | None) -> tuple[str, str | None]:
    """The text up to its first stop string, and the finish reason: stop, the engine's, or the deadline's."""
    ends = [at for at in (text.find(stop) for stop in job["stop"]) if at >= 0]
    if ends:
        return text[: min(ends)], "stop"
    return text, finish or ("length" if time.monotonic() > job["deadline"] else None)


class Handler(openai_server.Handler):
    """The shared handler's body reading, errors and SSE events, with this stack's routes and extensions."""

    service: Service
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self.fail(RequestError(f"no route GET {self.path}", status=404))
        model = {"id": self.service.name, "object": "model", "created": 0, "owned_by": "atelier"}
        self.send_json({"object": "list", "data": [model]})

    def do_POST(self) -> None:
        kind = ROUTES.get(self.path.rstrip("/"))
        try:
            body = self.body()
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
        try:
            for delta, finish_reason, tokens in self.service.chunks(job, self.gone):
                count = len(tokens)
                choice = {"index": 0, "finish_reason": finish_reason}
                if chat:
                    choice["delta"] = {"content": delta} if delta else {}
                else:
                    choice["text"] = delta
                if job["token_ids"]:
                    choice["token_ids"], seen = tokens[seen:], count
                self.event(head | {"choices": [choice]})
        except (RuntimeError, ValueError) as error:  # the engine's failure, after the stream began
            self.event({"error": {"message": f"generation failed: {error}", "type": "server_error", "param": None}})
        if job["usage"]:
            self.event(head | {"choices": [], "usage": usage(job, count)})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def log_message(self, format: str, *args) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of open-loop arrivals waits to be accepted instead of being reset


def usage(job: dict, completion: int) -> dict:
    prompt = len(job["prompt"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def main() -> None:
    args = arguments(__doc__, "Hugging Face model folder (llama)").parse_args()
    from transformers import AutoTokenizer

    knobs = Knobs.read()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    engine = Engine(args.model, knobs)
    Handler.service = Service(engine, tokenizer, args.model.name, context_of(args.model), args.deadline)
    server = Server((args.host, args.port), Handler)
    print(json.dumps({"ready": True, "port": server.server_address[1], "knobs": vars(knobs)}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
