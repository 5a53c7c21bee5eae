"""Confinement as one allow-list: what a confined command may read, write and reach, rendered as bubblewrap's
arguments. The harness (checker, benchmark) sees the whole file system read-only; candidates and agents' commands
see only the toolchain, the paths named readable and their own writable folders."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from backends.executor import Sandbox

INSTALL = "apt-get install bubblewrap"
KEEP = {"PATH", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ", "VIRTUAL_ENV", "LD_LIBRARY_PATH"}
KEEP_PREFIXES = ("LC_", "PYTHON", "MLX_", "OMP_", "OPENBLAS_", "MKL_")
TOOLCHAIN = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
MASKED_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d")
SCRATCH = "/tmp"
CONFINED_ENV = {
    "HOME": SCRATCH, "TMPDIR": SCRATCH, "HF_HUB_OFFLINE": "1", "HF_HOME": f"{SCRATCH}/hf",
    "PYTHONDONTWRITEBYTECODE": "1",
}  # fmt: skip
LAUNCH_VARIABLE = "ATELIER_CONFINE"


class SandboxError(Exception):
    pass


def available() -> str | None:
    """None when bubblewrap can confine a command here, else why not and how to fix it."""
    if sys.platform == "darwin":
        return "no sandbox for macOS yet (bubblewrap is Linux-only): agent-written stacks run on Linux; use the tuner"
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


def wrap(command: list[str], sandbox: Sandbox) -> list[str]:
    """The argv running command confined on this machine, its environment cleared to the harmless variables."""
    if not command:
        raise SandboxError("no command to sandbox")
    reason = available()
    if reason:
        raise SandboxError(reason)
    return local_args(sandbox) + ["--", *command]


def launcher(sandbox: Sandbox) -> list[str]:
    """The argv prefix a harness puts before a candidate's command (see targets/README.md, Contracts): the
    sandbox with its environment cleared to the harmless variables."""
    return wrap(["true"], sandbox)[:-2] + env_args(confined_env(sandbox)) + ["--"]


def launch_env(prefix: list[str]) -> dict[str, str]:
    return {LAUNCH_VARIABLE: json.dumps(prefix)}


def local_args(sandbox: Sandbox) -> list[str]:
    workspace = _existing_dir(sandbox.workspace, "workspace")
    writable = [_existing_dir(p, "writable path") for p in sandbox.writable]
    readable = [str(Path(p).resolve()) for p in (*sandbox.readable, *interpreter()) if Path(p).exists()]
    frozen = [str(p / ".git") for p in [workspace, *writable] if (p / ".git").exists()]
    masked = [p for p in MASKED_FILES if Path(p).exists()], [p for p in MASKED_DIRS if Path(p).is_dir()]
    return bwrap(str(workspace), [str(p) for p in writable], readable, sandbox, frozen, TOOLCHAIN, *masked)


def bwrap(
    workspace: str, writable: Sequence[str], readable: Sequence[str], sandbox: Sandbox, frozen: Sequence[str] = (),
    toolchain: Sequence[str] = TOOLCHAIN, masked_files: Sequence[str] = (), masked_dirs: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """bubblewrap's arguments up to the environment: the whole file system read-only for the harness, else only the
    toolchain and readable paths; a private /tmp, /dev and /proc; workspace and writable paths writable but their
    frozen parts; own PID, IPC and UTS namespaces and a new session (no ptrace, signals or terminal input outside);
    no network unless asked for (the candidate of a confined harness shares the harness's private network)."""
    argv = ["bwrap"]
    if sandbox.whole:
        argv += ["--ro-bind", "/", "/"]
    else:
        argv += [arg for path in toolchain for arg in ("--ro-bind-try", path, path)]
        argv += [arg for path in masked_files for arg in ("--ro-bind", "/dev/null", path)]
        argv += [arg for path in masked_dirs for arg in ("--tmpfs", path)]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if not (sandbox.whole and sandbox.network):
        argv += ["--tmpfs", "/run"]
    for path in readable:
        argv += ["--ro-bind", path, path]
    for path in [workspace, *writable]:
        argv += ["--bind", path, path]
    for path in frozen:
        argv += ["--ro-bind", path, path]
    if not sandbox.network:
        argv += ["--unshare-net"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session", "--die-with-parent"]
    return argv + ["--chdir", workspace]


def environment(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a confined command inherits: locale, paths and tuning, never credentials."""
    source = os.environ if source is None else source
    return {k: v for k, v in source.items() if k in KEEP or k.startswith(KEEP_PREFIXES)}


def confined_env(sandbox: Sandbox, source: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a command confined by sandbox starts with: the harmless variables; a private home unless it sees the
    whole file system."""
    kept = environment(source)
    if sandbox.whole:
        home = (os.environ if source is None else source).get("HOME")
        return {**kept, "HOME": home} if home else kept
    return {**kept, **CONFINED_ENV}


def env_args(values: Mapping[str, str]) -> list[str]:
    argv = ["--clearenv"]
    for key, value in sorted(values.items()):
        argv += ["--setenv", key, value]
    return argv


def interpreter() -> list[Path]:
    """This Python's environment and installation, so that it runs confined."""
    return sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()})


def _existing_dir(path: Path, what: str) -> Path:
    resolved = Path(path).resolve()
    if not resolved.is_dir():
        raise SandboxError(f"sandbox {what} is not a folder: {path}")
    return resolved
