"""The check through the stack's server: what users run, driven the way they drive it.

Shared by every bundle whose target.toml says `api = "openai"` (symlinked beside their check.py). The Judge passes
the target's serve line, filled in, as `check.py --serve COMMAND`; check(...) starts COMMAND plus `--port 0` in the
stack folder through the launch prefix in $ATELIER_CONFINE (stdin closed, stdout a pipe, stderr to a temporary
file), waits for the stdout line {"ready": true, "port": N}, and then, with the real `openai` client:

- GET /v1/models answers with at least one model;
- four requests over two cases drawn per call (SystemRandom: a stack cannot tell which requests are checked): the
  first case with its own max_tokens (cut when its reference is long) and cut short, the other cut short, streamed
  and not, max_tokens or max_completion_tokens; one of the short ones is first sent alone;
- every content must equal the reference text (greedy decoding), finish_reason the reference's ("length" when
  cut), usage.completion_tokens the reference's token count (streamed: when the stack sends a usage chunk, asked
  for with stream_options);
- a body that is not JSON is answered 400 (not a dropped connection or a 5xx);
- a client that goes away after the first event of a stream does not break what follows;
- the four requests from four clients at once (threads), compared as above;
- the server is still alive at the end.

Each problem is one line "served: ..." (candidate text collapsed to one line); the server's whole process group
is killed at the end (the launch prefix's sandbox dies with it).
"""

import http.client
import json
import os
import queue
import random
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

CONFINE = "ATELIER_CONFINE"
READY_TIMEOUT = 600.0
REQUEST_TIMEOUT = 180.0
CLIENTS = 4  # plan() makes this many requests
SHORT = 6  # at most this many tokens in a request cut short
LONGEST = 24  # a case whose reference is longer is cut at most this far (the server phase stays cheap)
PICKED = 2  # cases per call


@dataclass
class Expected:
    """One case as the server is asked it, and the reference's answer to it."""

    name: str
    request: dict  # chat.completions.create arguments but model, max_tokens and stream: messages, response_format…
    tokens: list[int]  # the reference's completion token ids
    text: str
    finish_reason: str
    max_tokens: int  # the limit the reference decoded under

    def limited(self, limit: int, decode: Callable[[list[int]], str] | None, stream: bool) -> "Ask":
        """The request with max_tokens = limit, and what the reference says it must answer."""
        if decode is None:
            limit = self.max_tokens
        if limit >= len(self.tokens):
            return Ask(self, limit, self.text, self.finish_reason, len(self.tokens), stream)
        return Ask(self, limit, decode(self.tokens[:limit]), "length", limit, stream)


@dataclass
class Ask:
    case: Expected
    max_tokens: int
    text: str
    finish_reason: str
    completion_tokens: int
    stream: bool = False
    limit_key: str = "max_tokens"

    def label(self) -> str:
        how = "streamed" if self.stream else "not streamed"
        return f"{self.case.name} ({how}, {self.limit_key} {self.max_tokens})"


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    completion_tokens: int | None


class ServedError(RuntimeError):
    pass


def one_line(text) -> str:
    """Text from the candidate, safe inside a harness line: it can never start a line of its own."""
    return " ".join(str(text).split())


def launch_prefix(env=None) -> list[str]:
    prefix = json.loads((os.environ if env is None else env).get(CONFINE) or "[]")
    if not isinstance(prefix, list) or not all(isinstance(arg, str) for arg in prefix):
        raise ValueError(f"${CONFINE} is not a JSON list of strings")
    return prefix


class Server:
    """The candidate's server: COMMAND --port 0 in the stack folder, confined by the launch prefix, in its own
    process group, which close() kills."""

    def __init__(self, serve: str, stack: Path, env=None):
        self.log = tempfile.TemporaryFile()
        command = launch_prefix(env) + shlex.split(serve) + ["--port", "0"]
        self.process = subprocess.Popen(
            command, cwd=Path(stack).resolve(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log, start_new_session=True,
        )  # fmt: skip
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self.read_lines, daemon=True).start()

    def read_lines(self) -> None:
        """Every stdout line to the queue (cut at 4 KiB), None at the end: the server never blocks on its stdout."""
        assert self.process.stdout is not None
        while line := self.process.stdout.readline(4096):
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> int:
        """The port of the stdout line {"ready": true, "port": N}; other lines before it are ignored."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ServedError(f'no {{"ready": true, "port": N}} line within {timeout:g} s: {self.tail()}') from None
            if line is None:
                code = self.process.wait()
                raise ServedError(f"the server exited with code {code} before it was ready: {self.tail()}")
            try:
                message = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(message, dict) and message.get("ready") is True:
                port = message.get("port")
                if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                    raise ServedError(f"the ready line names no port: {line[:200]!r}")
                return port

    def dead(self, wait: float = 0.0) -> str:
        """Why the server is gone ('' while it runs), given wait seconds to end (a dropped connection may come a
        moment before the exit)."""
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return ""
        return f"the server exited with code {self.process.returncode}: {self.tail()}"

    def tail(self, size: int = 1500) -> str:
        self.log.seek(0)
        return one_line(self.log.read().decode(errors="replace")[-size:]) or "(nothing on stderr)"

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self.log.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check(
    serve: str,
    stack: Path,
    cases: list[Expected],
    decode: Callable[[list[int]], str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
    timeout: float = REQUEST_TIMEOUT,
    rng: random.Random | None = None,
    before: Callable[[int], list[str]] | None = None,
) -> list[str]:
    """Every problem found through the server, each a line starting 'served: '. decode turns reference token ids
    into text (for requests cut short); without it every request runs to its case's own max_tokens. before(port),
    when given, runs the bundle's own checks on the ready server first: their failures, if any, are all returned."""
    rng = rng or random.SystemRandom()
    try:
        import openai  # noqa: F401
    except ImportError as error:
        return [f"served: the harness needs the openai package here (pip install openai): {error}"]
    try:
        server = Server(serve, stack)
    except (OSError, ValueError) as error:
        return [f"served: the server could not be started: {type(error).__name__}: {one_line(error)}"]
    with server:
        try:
            port = server.wait_ready(ready_timeout)
        except ServedError as error:
            return [f"served: the server did not start: {one_line(error)}"]
        failures = before(port) if before else []
        if failures:
            return failures
        if gone := server.dead():
            return [f"served: {gone}"]
        return [f"served: {one_line(f)}" for f in Session(server, port, timeout, rng).run(cases, decode)]


class Session:
    def __init__(self, server: Server, port: int, timeout: float, rng: random.Random):
        self.server, self.port, self.timeout, self.rng = server, port, timeout, rng
        self.model = "model"
        self.hung = False  # a request timed out: the rest would only wait as long

    def run(self, cases: list[Expected], decode) -> list[str]:
        failures = self.models()
        jobs = self.plan(cases, decode)
        if not jobs:
            return failures + self.malformed()
        alone = replace(self.rng.choice(jobs[1:]), stream=self.rng.random() < 0.5)
        phases = [
            lambda: self.compare(alone, self.ask(alone)),
            lambda: self.malformed() + self.dropped(self.rng.choice(jobs[1:])),
            lambda: self.at_once(jobs),
        ]
        for phase in phases:
            found = phase()
            failures += found
            if gone := self.stopped(2.0 if found else 0.0):
                return failures + [gone]
        return failures

    def stopped(self, wait: float) -> str:
        if self.hung:
            return "stopped after a request got no answer in time"
        return self.server.dead(wait)

    def client(self):
        import openai

        http_client = openai.DefaultHttpxClient(trust_env=False)
        base = f"http://127.0.0.1:{self.port}/v1"
        return openai.OpenAI(base_url=base, api_key="atelier", max_retries=0, timeout=self.timeout,
                             http_client=http_client)  # fmt: skip

    def models(self) -> list[str]:
        try:
            listed = self.client().models.list()
            ids = [m.id for m in listed.data if isinstance(getattr(m, "id", None), str)]
        except Exception as error:  # noqa: BLE001 - whatever broke, GET /v1/models failed
            return [f"GET /v1/models: {describe(error, self.timeout)}"]
        if not ids:
            return ["GET /v1/models lists no model"]
        self.model = ids[0]
        return []

    def plan(self, cases: list[Expected], decode) -> list[Ask]:
        """CLIENTS requests over PICKED cases drawn at random: the first case once with its own max_tokens (cut at
        a random point past SHORT when its reference is longer than LONGEST), then cut short in the other mode,
        and the other case cut short, streamed and not; each with max_tokens or max_completion_tokens at random.
        Only the first request is long: the server phase stays cheap on a slow stack."""
        if not cases:
            return []
        picked = self.rng.sample(cases, min(PICKED, len(cases)))
        first, other = picked[0], picked[-1]
        mode = self.rng.random() < 0.5
        jobs = [first.limited(self.long(first, decode), decode, mode)]
        jobs += [first.limited(self.short(first, decode), decode, not mode)]
        jobs += [other.limited(self.short(other, decode), decode, stream) for stream in (False, True)]
        for job in jobs:
            job.limit_key = self.rng.choice(("max_tokens", "max_completion_tokens"))
        return jobs

    def long(self, case: Expected, decode) -> int:
        if decode is None or len(case.tokens) <= LONGEST:
            return case.max_tokens
        return self.cut(case, decode, range(SHORT + 1, LONGEST + 1))

    def short(self, case: Expected, decode) -> int:
        if decode is None:
            return case.max_tokens
        return self.cut(case, decode, range(2, min(SHORT, len(case.tokens) - 1) + 1))

    def cut(self, case: Expected, decode, limits: range) -> int:
        """A max_tokens among limits that cuts the reference where its text is whole (no partial character)."""
        whole = [n for n in limits if not decode(case.tokens[:n]).endswith("\ufffd")]
        return self.rng.choice(whole) if whole else case.max_tokens

    def arguments(self, ask: Ask) -> dict:
        extra = {"stream_options": {"include_usage": True}} if ask.stream else {}
        return ask.case.request | extra | {"model": self.model, "stream": ask.stream, ask.limit_key: ask.max_tokens,
                                           "temperature": 0}  # fmt: skip

    def ask(self, ask: Ask, client=None) -> Answer | str:
        """The server's answer, or what went wrong."""
        client = client or self.client()
        try:
            if not ask.stream:
                reply = client.chat.completions.create(**self.arguments(ask))
                choice = reply.choices[0]
                used = reply.usage.completion_tokens if reply.usage else None
                return Answer(choice.message.content or "", choice.finish_reason, used)
            text, finish, used = "", None, None
            for chunk in client.chat.completions.create(**self.arguments(ask)):
                if chunk.usage is not None:
                    used = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    text += (choice.delta.content if choice.delta else None) or ""
                    finish = choice.finish_reason or finish
            return Answer(text, finish, used)
        except Exception as error:  # noqa: BLE001 - whatever broke, the request failed
            self.hung = self.hung or is_timeout(error)
            return describe(error, self.timeout)

    def compare(self, ask: Ask, answer: Answer | str) -> list[str]:
        if isinstance(answer, str):
            return [f"{ask.label()}: {answer}"]
        reasons = []
        if answer.text != ask.text:
            reasons.append(f"content {answer.text[:80]!r} differs from the reference {ask.text[:80]!r}")
        if answer.finish_reason != ask.finish_reason:
            reasons.append(f"finish_reason {answer.finish_reason!r}, reference {ask.finish_reason!r}")
        if answer.completion_tokens is None and not ask.stream:
            reasons.append("no usage.completion_tokens")
        elif answer.completion_tokens is not None and answer.completion_tokens != ask.completion_tokens:
            reasons.append(f"usage.completion_tokens {answer.completion_tokens}, reference {ask.completion_tokens}")
        return [f"{ask.label()}: {reason}" for reason in reasons]

    def malformed(self) -> list[str]:
        """A body that is not JSON must be a 400, not a dropped connection or a server error."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            connection.request("POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as error:
            return [f"a malformed body got no answer: {type(error).__name__}: {error}"]
        finally:
            connection.close()
        return [] if response.status == 400 else [f"a malformed body got HTTP {response.status}, not 400"]

    def dropped(self, ask: Ask) -> list[str]:
        """A streamed request whose client goes away after the first event; what follows must not suffer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        body = self.arguments(replace(ask, stream=True))
        try:
            connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                return [f"{ask.case.name} (streamed, to be dropped): HTTP {response.status}"]
            while line := response.readline(65536):
                if line.startswith(b"data:"):
                    break
        except (OSError, http.client.HTTPException) as error:
            return [f"{ask.case.name} (streamed, to be dropped): {type(error).__name__}: {error}"]
        finally:
            connection.close()
        return []

    def at_once(self, jobs: list[Ask]) -> list[str]:
        """The jobs from as many clients, started together; compared like the others."""
        jobs = jobs[:]
        self.rng.shuffle(jobs)
        clients = [self.client() for _ in jobs]
        start = threading.Barrier(len(jobs))
        results: list[list[str]] = [[] for _ in jobs]

        def one(k: int) -> None:
            start.wait()
            answer = self.ask(jobs[k], clients[k])
            results[k] = [f"{len(jobs)} clients at once: {r}" for r in self.compare(jobs[k], answer)]

        threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [line for result in results for line in result]


def is_timeout(error: Exception) -> bool:
    import openai

    return isinstance(error, openai.APITimeoutError | TimeoutError)


def describe(error: Exception, timeout: float) -> str:
    """What a failed request tells: the HTTP status and message, a dropped or refused connection, a timeout."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {str(error.message)[:300]}"
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        return f"the connection failed (dropped or refused): {type(cause).__name__ if cause else error}"
    return f"{type(error).__name__}: {str(error)[:300]}"
