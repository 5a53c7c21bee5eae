"""The TUI as the bench runs it on a pseudo-terminal: the real app plus a 10 ms heartbeat that notes when every run
is listed and drawn (startup) or, watching a run, each gap of its event loop with the UI thread's own CPU time in
that gap (a long gap with little CPU is the machine's doing, not the TUI's). `bare` is an empty Textual app with the
same heartbeat: the machine's own noise. Figures go to a JSON file.

    python -m app.bench.tuitimed OUT startup RUNS
    python -m app.bench.tuitimed OUT rounds|events|keys RUNS RUN_ID SECONDS
    python -m app.bench.tuitimed OUT bare RUNS - SECONDS

`rounds` and `events` watch the run on that tab without a key pressed; `keys` opens another tab and moves the
rounds cursor every second.
"""

import time

PYTHON_AT = time.time()

import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from textual.app import App  # noqa: E402
from textual.widgets import DataTable, Log, TabbedContent  # noqa: E402

from app.bench.tuibench import BEAT_S, SETTLE_S, TABS  # noqa: E402
from app.tui.app import AtelierApp  # noqa: E402
from app.tui.run import RunScreen  # noqa: E402
from app.tui.runs import RunsScreen  # noqa: E402


class Heartbeat:
    """Every gap between beats: wall time, and the CPU time this (the UI) thread spent in it; and every full
    (generation 2) garbage collection while beating, in seconds."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.since = 0.0
        self.last = (0.0, 0.0)
        self.gaps: list[tuple[float, float, str]] = []
        self.collections: list[float] = []
        self.collecting = 0.0
        gc.callbacks.append(self.collected)

    def collected(self, phase: str, info: dict) -> None:
        if info["generation"] == 2 and self.since:
            if phase == "start":
                self.collecting = time.perf_counter()
            else:
                self.collections.append(time.perf_counter() - self.collecting)

    def beat(self, where: str = "") -> bool:
        """Note a beat; True once `seconds` have passed since the first."""
        now = (time.perf_counter(), time.thread_time())
        if self.since:
            self.gaps.append((now[0] - self.last[0], now[1] - self.last[1], where))
        else:
            self.since = now[0]
        self.last = now
        return now[0] - self.since >= self.seconds


class Timed(AtelierApp):
    def __init__(self, out: Path, mode: str, runs: int, run_id: str = "", seconds: float = 0):
        super().__init__()
        self.out, self.mode, self.runs, self.run_id = out, mode, runs, run_id
        self.figures: dict = {"python_at": PYTHON_AT, "run_id": run_id}
        self.heart = Heartbeat(seconds)
        self.listed = False
        self.opened = 0.0
        self.next_switch = 0.0
        self.tab = 0

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(BEAT_S, self.beat)

    def beat(self) -> None:
        screen = self.screen
        if not self.listed:
            if isinstance(screen, RunsScreen) and screen.query_one("#runs", DataTable).row_count == self.runs:
                self.listed = True
                self.call_after_refresh(self.drawn)
        elif isinstance(screen, RunScreen) and screen.detail is not None:
            self.opened = self.opened or time.perf_counter()
            if time.perf_counter() - self.opened < SETTLE_S:
                return
            self.figures.setdefault("rounds_before", len(screen.detail.rounds))
            if self.heart.beat(TABS[(self.tab - 1) % len(TABS)] if self.mode == "keys" else f"tab-{self.mode}"):
                self.figures["rounds_after"] = len(screen.detail.rounds)
                self.figures["events_shown"] = len(screen.query_one("#events", Log).lines)
                self.finish()
            elif self.mode == "keys" and time.perf_counter() >= self.next_switch:
                self.next_switch = time.perf_counter() + 1.0
                screen.query_one("#tabs", TabbedContent).active = TABS[self.tab % len(TABS)]
                self.tab += 1
                screen.query_one("#rounds", DataTable).action_cursor_down()

    def drawn(self) -> None:
        self.figures["listed"] = time.time()
        if self.mode == "startup":
            self.finish()
            return
        self.push_screen(RunScreen(self.run_id, "tab-events" if self.mode == "events" else "tab-rounds"))

    def finish(self) -> None:
        self.out.write_text(json.dumps(self.figures | {"gaps": self.heart.gaps, "gc": self.heart.collections}))
        self.exit()


class Bare(App):
    def __init__(self, out: Path, seconds: float):
        super().__init__()
        self.out = out
        self.heart = Heartbeat(seconds)

    def on_mount(self) -> None:
        self.set_interval(BEAT_S, self.beat)

    def beat(self) -> None:
        if self.heart.beat():
            self.out.write_text(json.dumps({"gaps": self.heart.gaps, "gc": self.heart.collections}))
            self.exit()


if __name__ == "__main__":
    out, mode, runs, *rest = sys.argv[1:]
    if mode == "bare":
        Bare(Path(out), float(rest[1])).run()
    elif mode == "startup":
        Timed(Path(out), mode, int(runs)).run()
    else:
        Timed(Path(out), mode, int(runs), rest[0], float(rest[1])).run()
