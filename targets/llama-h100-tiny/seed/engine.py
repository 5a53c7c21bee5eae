"""Continuous batching: each step admits a waiting request, runs one prefill chunk, then one decode step for
every running request; greedy sampling. Running requests hold KV slots 0..n-1, the one prefilling slot n."""

import json
import queue
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from knobs import Knobs
from model import Cache, Llama


@dataclass
class Request:
    prompt: list[int]
    max_tokens: int
    ignore_eos: bool = False
    tokens: list[int] = field(default_factory=list)
    prefilled: int = 0
    cancelled: bool = False
    events: queue.Queue = field(default_factory=queue.Queue)

    def results(self, gone=lambda: False):
        """Yield (token, finish_reason or None) until finished; a stop token comes as (None, "stop").
        While waiting, gone() is asked every half second whether the client left; then the request is cancelled."""
        try:
            while True:
                try:
                    token, finish = self.events.get(timeout=0.5)
                except queue.Empty:
                    if gone():
                        raise ConnectionAbortedError("the client closed the connection") from None
                    continue
                if isinstance(finish, Exception):
                    raise finish
                yield token, finish
                if finish:
                    return
        finally:
            self.cancelled = True


class Engine:
    def __init__(self, folder: Path, knobs: Knobs):
        self.knobs = knobs
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = Llama(folder, knobs.dtype, knobs.attention, device)
        self.forward = self.model.forward
        if knobs.compile == "on":
            mode = "reduce-overhead" if device == "cuda" else "default"
            self.forward = torch.compile(self.model.forward, dynamic=True, mode=mode)
        self.cache = Cache(self.model.config, knobs.max_batch, self.model.dtype, device)
        self.eos = stop_tokens(folder)
        self.inbox: queue.Queue[Request] = queue.Queue()
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.prefilling: Request | None = None
        threading.Thread(target=self.loop, daemon=True, name="engine").start()

    def submit(self, prompt: list[int], max_tokens: int, ignore_eos: bool = False) -> Request:
        request = Request(prompt, max_tokens, ignore_eos)
        self.inbox.put(request)
        return request

    def loop(self) -> None:
        while True:
            idle = not (self.running or self.prefilling or self.waiting)
            try:
                self.waiting.append(self.inbox.get(block=idle))
                while True:
                    self.waiting.append(self.inbox.get_nowait())
            except queue.Empty:
                pass
            try:
                with torch.inference_mode():
                    self.step()
            except Exception as error:  # noqa: BLE001 - a failed step fails its requests, the server lives on
                print(f"engine step failed: {error!r}", file=sys.stderr)
                for request in [*self.running, *([self.prefilling] if self.prefilling else [])]:
                    request.events.put((None, error))
                self.running, self.prefilling = [], None

    def step(self) -> None:
        self.drop_cancelled()
        if self.prefilling is None and self.waiting and len(self.running) < self.knobs.max_batch:
            self.prefilling = self.waiting.popleft()
        if self.prefilling is not None:
            self.prefill(self.prefilling)
        if self.running:
            self.decode()

    def prefill(self, request: Request) -> None:
        start = request.prefilled
        chunk = request.prompt[start : start + self.knobs.prefill_chunk]
        tokens = torch.tensor([chunk], device=self.model.device)
        logits = self.forward(tokens, len(self.running), torch.tensor([start], device=self.model.device), self.cache)
        request.prefilled += len(chunk)
        if request.prefilled < len(request.prompt):
            return
        self.prefilling = None
        if not self.emit(request, int(logits[0].argmax())):
            self.running.append(request)

    def decode(self) -> None:
        device = self.model.device
        tokens = torch.tensor([[r.tokens[-1]] for r in self.running], device=device)
        starts = torch.tensor([len(r.prompt) + len(r.tokens) - 1 for r in self.running], device=device)
        chosen = self.forward(tokens, 0, starts, self.cache).argmax(-1).tolist()
        self.release([slot for slot, (r, t) in enumerate(zip(self.running, chosen, strict=True)) if self.emit(r, t)])

    def drop_cancelled(self) -> None:
        if any(r.cancelled for r in self.waiting):
            self.waiting = deque(r for r in self.waiting if not r.cancelled)
        if self.prefilling is not None and self.prefilling.cancelled:
            self.prefilling = None
        self.release([slot for slot, r in enumerate(self.running) if r.cancelled])

    def release(self, slots: list[int]) -> None:
        """Free the slots of finished requests: the last running request moves into each hole."""
        before = len(self.running)
        for slot in reversed(slots):
            last = len(self.running) - 1
            if slot != last:
                self.cache.move(last, slot)
                self.running[slot] = self.running[last]
            self.running.pop()
        if slots and self.prefilling is not None:
            self.cache.move(before, len(self.running))

    def emit(self, request: Request, token: int) -> bool:
        """Hand the token to the request; True when it finished."""
        if token in self.eos and not request.ignore_eos:
            request.events.put((None, "stop"))
            return True
        request.tokens.append(token)
        finish = "length" if len(request.tokens) >= request.max_tokens else None
        request.events.put((token, finish))
        return finish is not None


def stop_tokens(folder: Path) -> set[int]:
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        ids = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
        if ids is not None:
            return set(ids) if isinstance(ids, list) else {ids}
    return set()
