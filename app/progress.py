import sys
import threading
import time
from typing import TextIO


class Progress:
    """Terminal progress: one line per event, and on a terminal a live status line (round, role, elapsed)."""

    def __init__(self, out: TextIO | None = None, live: bool | None = None, verbose: bool = False):
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.verbose = verbose
        self.start = time.monotonic()
        self.status = ""
        self.role_since = self.start
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        if self.live:
            threading.Thread(target=self._tick, daemon=True).start()

    def clock(self, since: float | None = None) -> str:
        seconds = int(time.monotonic() - (self.start if since is None else since))
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def role(self, n: int | None, role: str, doing: str) -> None:
        self.status = f"round {n} · {role} · {doing}" if n is not None else f"{role} · {doing}"
        self.role_since = time.monotonic()
        self._write(f"  {self.status}")

    def event(self, n: int | None, kind: str, message: str) -> None:
        where = f"round {n:>3}" if n is not None else "run      "
        self._write(f"[{self.clock()}] {where}  {kind:<9} {message}")

    def output(self, line: str) -> None:
        if self.verbose:
            self._write(f"      | {line}")

    def close(self) -> None:
        self.stopped.set()
        self._clear()

    def _write(self, text: str) -> None:
        with self.lock:
            self._clear()
            print(text, file=self.out, flush=True)

    def _clear(self) -> None:
        if self.live:
            self.out.write("\r\033[K")

    def _tick(self) -> None:
        while not self.stopped.wait(1.0):
            if self.status:
                with self.lock:
                    line = f"\r\033[K  [{self.clock()}] {self.status} ({self.clock(self.role_since)})"
                    self.out.write(line)
                    self.out.flush()
