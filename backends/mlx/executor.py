import ctypes
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from backends import profiler
from backends import sandbox as confine
from backends.executor import CommandResult, Profile, Sandbox

OUTPUT_LINES = 2000


def _die_with_parent() -> None:
    os.setsid()
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalExecutor:
    """Runs commands on this machine, where MLX runs."""

    kind = "mlx"
    python = sys.executable

    def sync(self, workspace: Path) -> Path:
        return workspace

    def place(self, path: Path, readonly: bool = False) -> Path:
        return path

    def where(self, path: Path) -> Path:
        return path

    def fetch(self, path: Path, dest: Path) -> Path:
        if path.resolve() != dest.resolve():
            shutil.copy2(path, dest)
        return dest

    def discard(self, path: Path) -> None:
        pass

    def launcher(self, sandbox: Sandbox) -> list[str]:
        return confine.launcher(sandbox)

    def run(
        self,
        command: list[str],
        cwd: Path,
        timeout: float,
        env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        sandbox: Sandbox | None = None,
    ) -> CommandResult:
        base: Mapping[str, str] = os.environ
        if sandbox:
            command = _confine(command, cwd, sandbox)
            base = confine.confined_env(sandbox)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env={**base, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                preexec_fn=_die_with_parent,
            )
        except OSError as e:
            return CommandResult(command, None, f"cannot start {command[0]}: {e}", 0.0)
        lines: deque[str] = deque(maxlen=OUTPUT_LINES)
        reader = threading.Thread(target=_pump, args=(proc, lines, on_line), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            proc.wait()
        reader.join(timeout=5)
        return CommandResult(command, proc.returncode, "\n".join(lines), time.monotonic() - start, timed_out)

    def profile(
        self,
        command: list[str],
        cwd: Path,
        out: Path,
        timeout: float,
        env: dict[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> Profile:
        return profiler.run(self, self.profiler_tool(), command, cwd, out, timeout, env, sandbox)

    def profiler_tool(self) -> str:
        return "cProfile"

    def hardware(self) -> dict[str, str]:
        facts = {"machine": platform.machine(), "system": platform.system(), "processor": _processor()}
        facts["memory_gib"] = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f}"
        facts["cores"] = str(os.cpu_count())
        try:
            import mlx.core as mx

            facts["mlx_device"] = str(mx.default_device())
            facts["mlx_version"] = getattr(mx, "__version__", "?")
        except ImportError:
            facts["mlx_device"] = "mlx not installed"
        return facts


def _confine(command: list[str], cwd: Path, sandbox: Sandbox) -> list[str]:
    if Path(cwd).resolve() != Path(sandbox.workspace).resolve():
        raise confine.SandboxError(f"a sandboxed command runs in its workspace {sandbox.workspace}, not in {cwd}")
    return confine.wrap(command, sandbox)


def _pump(proc: subprocess.Popen, lines: deque[str], on_line: Callable[[str], None] | None) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        if on_line:
            on_line(line)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _processor() -> str:
    if sys.platform == "darwin":
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        return out.stdout.strip()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
