from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class ExecutorError(Exception):
    """The place commands run is unusable (host down, refused, misconfigured); the run can resume later."""


class ConfigError(ExecutorError):
    pass


@dataclass
class CommandResult:
    command: list[str]
    exit_code: int | None
    output: str
    seconds: float
    timed_out: bool = False
    failure: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.failure

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


@dataclass
class Profile:
    """One run of a command under a profiler: which one, the summary tables, where the full report stays."""

    tool: str
    summary: str
    raw: str = ""
    ok: bool = True


@dataclass
class Sandbox:
    """Confines a command (backends/sandbox.py): only workspace and writable can change; it sees the toolchain and
    readable, or the whole file system read-only when whole (the harness); no network unless asked for."""

    workspace: Path
    writable: tuple[Path, ...] = ()
    network: bool = False
    readable: tuple[Path, ...] = ()
    whole: bool = False


class Executor(Protocol):
    kind: str
    python: str

    def sync(self, workspace: Path) -> Path:
        """Make the workspace available where commands run; returns its path there."""
        ...

    def place(self, path: Path, readonly: bool = False) -> Path:
        """Make an input available where commands run (read-only and hash-checked when asked); its path there."""
        ...

    def where(self, path: Path) -> Path:
        """Where a local path synced or placed earlier is, where commands run."""
        ...

    def run(
        self,
        command: list[str],
        cwd: Path,
        timeout: float,
        env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        sandbox: Sandbox | None = None,
    ) -> CommandResult:
        """Run in its own process group, stream lines to on_line, kill the whole group at the timeout.

        With a sandbox: confined, in its workspace, no credentials in the environment; never unconfined instead."""
        ...

    def fetch(self, path: Path, dest: Path) -> Path: ...

    def discard(self, path: Path) -> None:
        """Remove a folder synced earlier from where commands run (a call's copy of a stack)."""
        ...

    def launcher(self, sandbox: Sandbox) -> list[str]:
        """The argv prefix that starts a candidate confined by sandbox where commands run (local paths mapped)."""
        ...

    def profile(
        self,
        command: list[str],
        cwd: Path,
        out: Path,
        timeout: float,
        env: dict[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> Profile:
        """Run once under the best profiler there (nsys, torch.profiler, cProfile), its raw report into the local
        folder out as placed there; never part of a measurement."""
        ...

    def hardware(self) -> dict[str, str]: ...
