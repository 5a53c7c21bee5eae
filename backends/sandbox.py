"""Confinement as one allow-list (backends/allowlist.py): what a confined command may read, write and reach,
rendered as bubblewrap's arguments on Linux and as a Seatbelt profile on macOS. The harness (checker, benchmark)
sees the whole file system read-only; candidates and agents' commands see only the toolchain, the paths named
readable and their own writable folders."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from backends import bwrap, seatbelt
from backends.allowlist import Spec
from backends.executor import Sandbox

INSTALL = "apt-get install bubblewrap"
MACOS = sys.platform == "darwin"
KEEP = {"PATH", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ", "VIRTUAL_ENV", "LD_LIBRARY_PATH"}
KEEP_PREFIXES = ("LC_", "PYTHON", "MLX_", "OMP_", "OPENBLAS_", "MKL_")
TOOLCHAIN = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
MASKED_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d")
MAC_TOOLCHAIN = (
    "/usr", "/bin", "/sbin", "/System", "/Library/Frameworks", "/Library/Developer/CommandLineTools",
    "/private/etc", "/private/var/db/timezone", "/opt/homebrew", "/dev",
)  # fmt: skip
MAC_MASKED_FILES = ("/private/etc/master.passwd",)
MAC_MASKED_DIRS = ("/private/etc/ssh", "/private/etc/sudoers.d")
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
    if MACOS:
        fix = "it ships with macOS: check that /usr/bin/sandbox-exec exists and runs outside any other sandbox"
        return _probe([seatbelt.SANDBOX_EXEC, "-p", "(version 1)(allow default)", "true"], "sandbox-exec", fix)
    found = shutil.which("bwrap")
    if found is None:
        return f"bubblewrap is not installed: {INSTALL}"
    probe = [found, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--", "true"]
    return _probe(probe, "bubblewrap", "run as root or enable unprivileged user namespaces")


def _probe(argv: list[str], name: str, fix: str) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{name} does not run ({e}): {fix}"
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        return f"{name} cannot create a sandbox here ({reason}): {fix}"
    return None


def wrap(command: list[str], sandbox: Sandbox) -> list[str]:
    """The argv running command confined on this machine, its environment cleared to the harmless variables."""
    if not command:
        raise SandboxError("no command to sandbox")
    reason = available()
    if reason:
        raise SandboxError(reason)
    if MACOS and sandbox.whole:
        return list(command)  # Seatbelt cannot nest: the trusted harness runs outside it and confines the candidate
    if MACOS:
        return seatbelt.command(spec(sandbox), command)
    return bwrap.arguments(spec(sandbox)) + ["--", *command]


def launcher(sandbox: Sandbox) -> list[str]:
    """The argv prefix a harness puts before a candidate's command (see targets/README.md, Contracts): the
    sandbox with its environment cleared to the harmless variables."""
    confined = wrap(["true"], sandbox)[:-1]
    if MACOS:
        values = [f"{k}={v}" for k, v in sorted(confined_env(sandbox).items())]
        return ["/usr/bin/env", "-i", *values, *confined]
    return confined[:-1] + env_args(confined_env(sandbox)) + ["--"]


def launch_env(prefix: list[str]) -> dict[str, str]:
    return {LAUNCH_VARIABLE: json.dumps(prefix)}


def spec(sandbox: Sandbox) -> Spec:
    """The allow-list of sandbox on this machine: paths resolved, the git metadata inside writable folders frozen,
    the secrets of this platform's toolchain masked."""
    workspace = _existing_dir(sandbox.workspace, "workspace")
    writable = [_existing_dir(p, "writable path") for p in sandbox.writable]
    readable = [str(Path(p).resolve()) for p in (*sandbox.readable, *interpreter()) if Path(p).exists()]
    frozen = [str(p / ".git") for p in [workspace, *writable] if (p / ".git").exists()]
    files, dirs = (MAC_MASKED_FILES, MAC_MASKED_DIRS) if MACOS else (MASKED_FILES, MASKED_DIRS)
    return Spec(
        str(workspace), tuple(str(p) for p in writable), tuple(readable), MAC_TOOLCHAIN if MACOS else TOOLCHAIN,
        tuple(p for p in files if Path(p).exists()), tuple(p for p in dirs if Path(p).is_dir()), tuple(frozen),
        sandbox.whole, sandbox.network, scratch(workspace),
    )  # fmt: skip


def scratch(workspace: Path) -> str:
    """The command's private temporary folder: a fresh /tmp inside bubblewrap; on macOS, which cannot mount one,
    a folder of its own under the system's temporary folder, named by the workspace."""
    if not MACOS:
        return "/tmp"
    name = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()).resolve() / f"atelier-scratch-{name}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder)


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
    if MACOS:
        private = scratch(_existing_dir(sandbox.workspace, "workspace"))
        return {**kept, **{k: v.replace(SCRATCH, private, 1) for k, v in CONFINED_ENV.items()}}
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
