"""Open-loop Poisson load over HTTP: requests are sent at their scheduled times whatever the server's state,
each streamed to measure time to first token (TTFT) and time per output token (TPOT)."""

import random
import statistics
import threading
import time
from dataclasses import dataclass

from stack import StackError, stream


@dataclass
class Arrival:
    at: float
    prompt: int


@dataclass
class Outcome:
    sent: float
    first: float | None = None
    done: float | None = None
    tokens: int = 0
    error: str = ""


def schedule(rate: float, duration: float, seed: int, prompts: int) -> list[Arrival]:
    """Exponential gaps of mean 1/rate from a seeded generator, up to duration seconds; a prompt drawn for each."""
    rng = random.Random(seed)
    arrivals, at = [], rng.expovariate(rate)
    while at < duration:
        arrivals.append(Arrival(at, rng.randrange(prompts)))
        at += rng.expovariate(rate)
    return arrivals


def request(model: str, messages: list, max_tokens: int) -> dict:
    return {
        "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip


def drive(port: int, model: str, prompts: list[list], arrivals: list[Arrival], max_tokens: int, drain: float):
    """Send every arrival on time, each on its own thread; wait at most drain seconds after the last is sent."""
    outcomes = [Outcome(0.0) for _ in arrivals]
    threads = []
    start = time.perf_counter()
    for arrival, outcome in zip(arrivals, outcomes, strict=True):
        time.sleep(max(0.0, start + arrival.at - time.perf_counter()))
        body = request(model, prompts[arrival.prompt], max_tokens)
        thread = threading.Thread(target=one, args=(port, body, outcome, drain), daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.perf_counter() + drain
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    for outcome in outcomes:
        if outcome.done is None and not outcome.error:
            outcome.error = f"no answer within {drain:g} s after the last request was sent"
    return outcomes


def one(port: int, body: dict, outcome: Outcome, timeout: float) -> None:
    outcome.sent = time.perf_counter()
    chunks, usage = 0, None
    try:
        for at, event in stream(port, "/v1/chat/completions", body, timeout):
            delta = (event.get("choices") or [{}])[0].get("delta") or {}
            if delta.get("content"):
                chunks += 1
                outcome.first = outcome.first or at
            usage = event.get("usage") or usage
        outcome.tokens = usage["completion_tokens"] if usage else chunks
        outcome.done = time.perf_counter()
    except (OSError, StackError, ValueError, KeyError) as error:
        outcome.error = f"{type(error).__name__}: {error}"


@dataclass
class Summary:
    requests: int
    tokens: int
    elapsed: float
    ttft_ms: float
    tpot_ms: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed


def summarize(outcomes: list[Outcome]) -> Summary:
    done = [o for o in outcomes if o.done is not None and o.first is not None]
    elapsed = max(o.done for o in done) - min(o.sent for o in outcomes)
    ttft = [o.first - o.sent for o in done]
    tpot = [(o.done - o.first) / (o.tokens - 1) for o in done if o.tokens > 1]
    return Summary(
        len(outcomes), sum(o.tokens for o in done), elapsed, 1000 * statistics.fmean(ttft),
        1000 * statistics.fmean(tpot) if tpot else 0.0,
    )  # fmt: skip
