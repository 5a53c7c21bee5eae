"""The README's tmux check, done as a new user would: the installed `atelier` in a tmux pane, driven only with
send-keys and read only with capture-pane. Launch the toy target, watch it to its first accepted round, pause,
resume, export."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.run import alive
from app.store import Store
from conftest import ROOT
from test_target import one_repeat

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux")]


class Pane:
    def __init__(self, socket: Path, name: str = "atelier"):
        self.tmux = ["tmux", "-S", str(socket)]
        self.name = name

    def start(self, command: str, cwd: Path) -> None:
        """A 160x45 session; the process environment is given as os.environ holds it, since a library loaded in
        this process may have set LINES and COLUMNS in the C-level one, which the app would then obey."""
        subprocess.run([*self.tmux, "new-session", "-d", "-s", self.name, "-x", "160", "-y", "45", "-c", str(cwd),
                        command], check=True, env=dict(os.environ))  # fmt: skip

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys], check=True)

    def text(self) -> str:
        shown = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return shown.stdout

    def wait(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, text := self.text()):
                return text
            time.sleep(0.3)
        raise AssertionError(f"never saw /{pattern}/ on the screen:\n{self.text()}")

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def test_launch_watch_pause_resume_export_through_tmux(toy_bundle, tmp_path):
    bundle = one_repeat(Path(shutil.copytree(toy_bundle, tmp_path / "toy")))
    home = tmp_path / "home"
    installed = Path(sys.executable).parent / "atelier"
    pane = Pane(tmp_path / "tmux.sock")
    env = f"env -u LINES -u COLUMNS ATELIER_HOME={home} ATELIER_CONFIG={os.devnull} PYTHONPATH={ROOT}"
    pane.start(f"{env} {installed}", tmp_path)
    try:
        pane.wait("No runs yet|no store at", timeout=30)
        pane.keys("n")
        pane.wait("Target: a bundled name")
        pane.keys(str(bundle), literal=True)
        pane.wait(r"✓ toy: ")
        pane.keys("C-s")
        pane.wait(r"toy on mlx  ·  policy tuner  ·  running", timeout=180)
        pane.wait(r"1 +cache=kv +accepted", timeout=300)
        pane.keys("p")
        pane.wait(r"·  paused", timeout=120)
        pane.keys("r")
        shown = pane.wait(r"·  running|·  done", timeout=60)
        assert "·  paused" not in shown
        pane.keys("e")
        pane.wait("Export the best stack to this folder")
        pane.keys("Enter")
        pane.wait("exported to", timeout=120)
        [run] = Store(home / "atelier.db").runs()
        exported = tmp_path / f"atelier-{run.id}"
        assert (exported / "README.md").exists() and (exported / "run.sh").exists()
        pane.keys("q")
    finally:
        pane.close()
        for run in Store(home / "atelier.db").runs() if (home / "atelier.db").exists() else []:
            if alive(run.pid):
                os.kill(run.pid, signal.SIGTERM)
