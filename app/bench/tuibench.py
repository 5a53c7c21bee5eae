"""The TUI's startup time with many runs in the store, and its frame stalls while a live run writes events.

Each startup is a fresh `atelier` TUI process on a real pseudo-terminal, timed from its launch until the runs table
holds every run and has been drawn. Then, while a writer process plays a run's loop at a steady rate, the TUI watches
that run and a 10 ms heartbeat on its event loop records every gap: on the rounds tab and on the events tab with no
key pressed (the stalls that count), then switching tabs and rounds every second (how fast keys answer).
"""

import argparse
import fcntl
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from app.bench import tuistore
from app.store import Store
from app.target import ROOT

SIZE = (160, 45)
BEAT_S = 0.01
SETTLE_S = 1.0
MAX_STARTUP_S = 2.0
MAX_GAP_S = 0.1
TABS = ("tab-events", "tab-diff", "tab-memory", "tab-usage", "tab-backlog", "tab-rounds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=50, help="runs in the store (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="timed startups; the median counts (default 5)")
    parser.add_argument("--seconds", type=float, default=10, help="time watching the live run (default 10)")
    parser.add_argument("--rate", type=float, default=20, help="events a second the writer adds (default 20)")
    parser.add_argument("--round-seconds", type=float, default=2, help="a round ends this often (default 2)")


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="atelier-tuibench-") as scratch:
        home = Path(scratch) / "home"
        db, live = tuistore.build(home, args.runs)
        env = dict(os.environ, ATELIER_HOME=str(home), ATELIER_CONFIG=os.devnull, TERM="xterm-256color")
        startups = [in_pty(["startup", str(args.runs)], env, Path(scratch) / f"startup-{i}.json")
                    for i in range(args.repeats)]  # fmt: skip
        bare = in_pty(["bare", "0", "-", str(args.seconds)], env, Path(scratch) / "bare.json")
        plays = [str(db), live, str(args.rate), str(args.round_seconds), str(args.seconds * 4 + 120)]
        writer = subprocess.Popen([sys.executable, "-m", "app.bench.tuistore", *plays], cwd=ROOT, env=env)
        try:
            wait_running(db, live, writer.pid)
            watched = {}
            for mode in ("rounds", "events", "keys"):
                argv = [mode, str(args.runs), live, str(args.seconds)]
                watched[mode] = in_pty(argv, env, Path(scratch) / f"{mode}.json")
        finally:
            writer.terminate()
            writer.wait()
    return report(args, startups, bare, watched)


def wait_running(db: Path, run_id: str, pid: int) -> None:
    store = Store(db)
    try:
        deadline = time.monotonic() + 30
        while store.run(run_id).pid != pid:
            if time.monotonic() > deadline:
                raise RuntimeError("the writer never started")
            time.sleep(0.05)
    finally:
        store.close()


def in_pty(argv: list[str], env: dict, out: Path, timeout: float = 300) -> dict:
    """Run the timed TUI on a fresh pseudo-terminal of SIZE; its figures, with `launched` the wall time of its start."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    launched = time.time()
    command = [sys.executable, "-m", "app.bench.tuitimed", str(out), *argv]
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True)
    os.close(slave)
    tail = bytearray()
    drain = threading.Thread(target=_drain, args=(master, tail), daemon=True)
    drain.start()
    try:
        proc.wait(timeout)
    finally:
        proc.kill()
        drain.join(5)
        os.close(master)
    if not out.exists():
        raise RuntimeError(
            f"the timed TUI exited {proc.returncode} without figures: {tail[-2000:].decode(errors='replace')}"
        )
    return json.loads(out.read_text()) | {"launched": launched}


def _drain(fd: int, tail: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        tail[:] = (tail + chunk)[-20000:]


def gaps(figures: dict) -> tuple[float, float, float, float, int]:
    """Median, p99 and max heartbeat gap, the most UI-thread CPU time in one gap (all ms), and the beats."""
    walls = sorted(g[0] for g in figures["gaps"]) or [float("nan")]
    busy = max((g[1] for g in figures["gaps"]), default=float("nan"))
    p99 = walls[min(len(walls) - 1, int(len(walls) * 0.99))]
    return statistics.median(walls) * 1e3, p99 * 1e3, walls[-1] * 1e3, busy * 1e3, len(walls)


def report(args, startups: list[dict], bare: dict, watched: dict[str, dict]) -> int:
    took = [s["listed"] - s["launched"] for s in startups]
    python = [s["python_at"] - s["launched"] for s in startups]
    startup = statistics.median(took)
    store = f"{args.runs} runs ({tuistore.ROUNDS} rounds, {tuistore.ROUNDS * tuistore.EVENTS_PER_ROUND} events each)"
    machine = f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    print(f"atelier bench tui: {store} on a {SIZE[0]}x{SIZE[1]} pseudo-terminal; {machine}")
    print(f"{'startup, s: launch → all runs listed and drawn':<62} {'median':>7} {'min':>7} {'max':>7}  n")
    print(f"{'  atelier tui':<62} {startup:7.3f} {min(took):7.3f} {max(took):7.3f}  {len(took)}")
    print(f"{'  of which the interpreter starting':<62} {statistics.median(python):7.3f}")
    print(f"{'frame gaps, ms: a 10 ms heartbeat on the UI loop':<62} {'median':>7} {'p99':>7} {'max':>7} "
          f"{'UI CPU':>7}  beats")  # fmt: skip
    live = f"{args.rate:g} events/s, a round per {args.round_seconds:g} s"
    rows = (("  an empty Textual app: the machine's own noise", bare),
            (f"  the live run's rounds tab, {live}", watched["rounds"]),
            (f"  the live run's events tab, {live}", watched["events"]),
            ("  keys: another tab and round every second (not a stall)", watched["keys"]))  # fmt: skip
    for name, figures in rows:
        print(f"{name:<62} {'{:7.1f} {:7.1f} {:7.1f} {:7.1f}  {}'.format(*gaps(figures))}")
    for mode, figures in watched.items():
        worst = ", ".join(
            f"{w * 1e3:.0f} ms ({c * 1e3:.0f} ms UI CPU, {tab})" for w, c, tab in sorted(figures["gaps"])[-3:]
        )
        shown = f"rounds {figures['rounds_before']} → {figures['rounds_after']}, {figures['events_shown']} event lines"
        collections = ", ".join(f"{c * 1e3:.0f} ms" for c in figures["gc"]) or "none"
        print(f"{mode}: {shown}; full garbage collections: {collections}; worst gaps {worst}")
    stall = max(gaps(watched[mode])[2] for mode in ("rounds", "events"))
    failed = []
    if startup >= MAX_STARTUP_S:
        failed.append(f"startup median {startup:.2f} s ≥ {MAX_STARTUP_S:g} s")
    if not stall <= MAX_GAP_S * 1e3:
        failed.append(f"a frame stall of {stall:.0f} ms > {MAX_GAP_S * 1e3:.0f} ms while the run wrote")
    if any(f["rounds_after"] <= f["rounds_before"] for f in watched.values()):
        failed.append("the run screen did not show the writer's new rounds")
    print("FAIL: " + "; ".join(failed) if failed else "ok: startup under 2 s, no stall over 100 ms while the run wrote")
    return 1 if failed else 0
