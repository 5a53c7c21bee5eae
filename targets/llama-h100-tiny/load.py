"""Open-loop Poisson load over HTTP: requests are sent at their scheduled times whatever the server's state,
each streamed to measure time to first token (TTFT) and time per output token (TPOT)."""

import http.client
import random
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field

from stack import StackError, stream


@dataclass
class Arrival:
    at: float
    prompt: int


@dataclass
class Outcome:
    sent: float
    first: float | None = None
    last: float | None = None
    done: float | None = None
    tokens: int = 0
    ids: list[int] = field(default_factory=list)
    error: str = ""
    sock: socket.socket | None = None

    def abort(self) -> None:
        """Shut down the connection of a request still running at the deadline; the server then drops it."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def schedule(rate: float, duration: float, seed: int, prompts: int) -> list[Arrival]:
    """Exponential gaps of mean 1/rate from a seeded generator, up to duration seconds; a prompt drawn for each."""
    rng = random.Random(seed)
    arrivals, at = [], rng.expovariate(rate)
    while at < duration:
        arrivals.append(Arrival(at, rng.randrange(prompts)))
        at += rng.expovariate(rate)
    return arrivals


def request(model: str, messages: list, max_tokens: int) -> dict:
    """Every request asks for its token ids, so the ones the benchmark checks look like all the others."""
    return {
        "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
        "stream_options": {"include_usage": True}, "return_token_ids": True,
    }  # fmt: skip


def drive(port: int, model: str, prompts: list[list], arrivals: list[Arrival], max_tokens: int, drain: float):
    """Send every arrival on time, each on its own thread; wait at most drain seconds after the last is sent."""
    outcomes = [Outcome(0.0) for _ in arrivals]
    threads = []
    start = time.perf_counter()
    for arrival, outcome in zip(arrivals, outcomes, strict=True):
        time.sleep(max(0.0, start + arrival.at - time.perf_counter()))
        body = request(model, prompts[arrival.prompt], max_tokens)
        thread = threading.Thread(target=one, args=(port, body, outcome), daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.perf_counter() + drain
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    unfinished = [o for o in outcomes if o.done is None and not o.error]
    for outcome in unfinished:
        outcome.abort()
    for thread in threads:
        thread.join(max(0.0, deadline + 10 - time.perf_counter()))
    for outcome in unfinished:
        outcome.error = ""
    return outcomes


def one(port: int, body: dict, outcome: Outcome) -> None:
    outcome.sent = time.perf_counter()
    usage = None

    def opened(sock) -> None:
        outcome.sock = sock

    try:
        for at, event in stream(port, "/v1/chat/completions", body, None, opened):
            choice = (event.get("choices") or [{}])[0]
            delta = choice.get("delta") or {}
            outcome.ids += [int(i) for i in choice.get("token_ids") or []]
            if delta.get("content"):
                outcome.tokens += 1
                outcome.first, outcome.last = outcome.first or at, at
            usage = event.get("usage") or usage
        outcome.tokens = usage["completion_tokens"] if usage else outcome.tokens
        outcome.done = time.perf_counter()
    except (OSError, StackError, ValueError, KeyError, TypeError, AttributeError, http.client.HTTPException) as error:
        outcome.error = f"{type(error).__name__}: {error}"


@dataclass
class Summary:
    requests: int
    unfinished: int
    tokens: int
    elapsed: float
    ttft_ms: float
    tpot_ms: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed


def summarize(outcomes: list[Outcome]) -> Summary:
    """Tokens received (from unfinished requests too) over the time from the first send to the last token;
    TTFT over the requests that got a first token, TPOT over the finished ones."""
    done = [o for o in outcomes if o.done is not None and o.first is not None]
    started = [o for o in outcomes if o.first is not None]
    elapsed = max(o.last for o in started) - min(o.sent for o in outcomes)
    ttft = [o.first - o.sent for o in started]
    tpot = [(o.last - o.first) / (o.tokens - 1) for o in done if o.tokens > 1]
    return Summary(
        len(outcomes), len(outcomes) - len(done), sum(o.tokens for o in started), elapsed,
        1000 * statistics.fmean(ttft), 1000 * statistics.fmean(tpot) if tpot else 0.0,
    )  # fmt: skip
