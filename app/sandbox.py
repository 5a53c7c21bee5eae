import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

INSTALL = "apt-get install bubblewrap"
KEEP = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "HF_HOME"}
KEEP_PREFIXES = ("LC_", "PYTHON", "MLX_", "OMP_", "OPENBLAS_")


class SandboxError(Exception):
    pass


def available() -> str | None:
    """None when bubblewrap can confine a command here, else why not and how to fix it."""
    if sys.platform == "darwin":
        return (
            "no sandbox for macOS yet (bubblewrap is Linux-only): agent-written stacks run on Linux, or use the tuner"
        )
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"bubblewrap is not installed: {INSTALL}"
    probe = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--", "true"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap does not run: {e}"
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        return f"bubblewrap cannot create a sandbox here ({reason}): run as root or enable unprivileged user namespaces"
    return None


def wrap(
    command: list[str], workspace: Path, writable: Sequence[Path] = (), network: bool = False,
    readable: Sequence[Path] = (), hidden: Sequence[Path] = (),
) -> list[str]:  # fmt: skip
    """The argv running command read-only everywhere except workspace and writable (not their .git), private /tmp."""
    if not command:
        raise SandboxError("no command to sandbox")
    reason = available()
    if reason:
        raise SandboxError(reason)
    binds = [_existing_dir(workspace, "workspace")] + [_existing_dir(p, "writable path") for p in writable]
    frozen = [str(path / ".git") for path in binds if (path / ".git").exists()]
    shown = [str(Path(p).resolve()) for p in (*readable, *interpreter())]
    covered = [str(Path(p).resolve()) for p in hidden]
    return bwrap(str(binds[0]), [str(p) for p in binds[1:]], shown, network, frozen, covered) + list(command)


def interpreter() -> list[Path]:
    """This Python's environment, so that it runs confined even from under the private /tmp."""
    return sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()})


def bwrap(
    workspace: str, writable: Sequence[str] = (), readable: Sequence[str] = (), network: bool = False,
    frozen: Sequence[str] = (), hidden: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """bubblewrap's arguments up to the command: all read-only, a private /tmp and /run and empty hidden folders
    (readable paths under them shown again), workspace and writable paths writable but their frozen parts, no
    network unless asked for."""
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if not network:
        argv += ["--unshare-net", "--tmpfs", "/run"]
    for path in hidden:
        argv += ["--tmpfs", path]
    for path in readable:
        argv += ["--ro-bind", path, path]
    for path in [workspace, *writable]:
        argv += ["--bind", path, path]
    for path in frozen:
        argv += ["--ro-bind", path, path]
    return argv + ["--unshare-pid", "--die-with-parent", "--chdir", workspace, "--"]


def environment() -> dict[str, str]:
    """The variables a confined command inherits: locale, paths and tuning, never credentials."""
    return {k: v for k, v in os.environ.items() if k in KEEP or k.startswith(KEEP_PREFIXES)}


def _existing_dir(path: Path, what: str) -> Path:
    resolved = Path(path).resolve()
    if not resolved.is_dir():
        raise SandboxError(f"sandbox {what} is not a folder: {path}")
    return resolved
