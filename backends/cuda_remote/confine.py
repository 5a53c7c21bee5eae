"""Confinement on the remote host: bubblewrap with the allow-list used locally, started with only the harmless
environment (filtered there, where the values are)."""

from collections.abc import Sequence
from pathlib import Path

from backends import bwrap
from backends.allowlist import Spec
from backends.cuda_remote.ssh import Ssh
from backends.executor import Sandbox
from backends.sandbox import CONFINED_ENV, KEEP, KEEP_PREFIXES, TOOLCHAIN, SandboxError

PROBE = "bwrap --ro-bind / / --dev /dev --proc /proc --unshare-net -- true"
PREFIXES = "import os, sys; print(os.path.realpath(sys.prefix)); print(os.path.realpath(sys.base_prefix))"
MASKED_FILES = ("/etc/shadow", "/etc/gshadow")
MASKED_DIRS = ("/etc/ssh",)
LAUNCH = (
    "import os, sys\n"
    "keep = set(sys.argv[1].split(',')) | set(sys.argv[2].split(','))\n"
    "prefixes = tuple(sys.argv[3].split(','))\n"
    "env = {k: v for k, v in os.environ.items() if k in keep or k.startswith(prefixes)}\n"
    "os.execvpe(sys.argv[4], sys.argv[4:], env)\n"
)


def usable(ssh: Ssh) -> str | None:
    """None when bubblewrap confines commands on the host, else why not and the fix."""
    out = ssh.run(PROBE)
    if out.returncode == 0:
        return None
    reason = (out.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {out.returncode}"])[-1]
    return (
        f"{ssh.host}: bubblewrap cannot confine commands there ({reason}): apt-get install bubblewrap, "
        "and allow unprivileged user namespaces or run as root"
    )


def wrap(
    python: str, command: list[str], sandbox: Sandbox, passed: Sequence[str], interpreter: Sequence[str] = ()
) -> list[str]:
    """The remote argv running command confined; sandbox holds remote paths, passed the variables let through,
    interpreter the remote Python's own folders."""
    if not command:
        raise SandboxError("no command to sandbox")
    return prefix(python, sandbox, passed, interpreter) + command


def prefix(python: str, sandbox: Sandbox, passed: Sequence[str] = (), interpreter: Sequence[str] = ()) -> list[str]:
    """The remote argv prefix up to the command: the environment filter, then bubblewrap."""
    readable = tuple(str(p) for p in (*sandbox.readable, *interpreter))
    writable = tuple(str(p) for p in sandbox.writable)
    spec = Spec(str(sandbox.workspace), writable, readable, TOOLCHAIN, MASKED_FILES, MASKED_DIRS,
                whole=sandbox.whole, network=sandbox.network)  # fmt: skip
    argv = bwrap.arguments(spec)
    if not sandbox.whole:
        argv += [arg for key, value in CONFINED_ENV.items() for arg in ("--setenv", key, value)]
    names = [",".join(sorted(KEEP)), ",".join(passed) or "-", ",".join(KEEP_PREFIXES)]
    return [python, "-c", LAUNCH, *names, *argv, "--"]


def check_cwd(cwd: Path, workspace: Path) -> None:
    if Path(cwd) != Path(workspace):
        raise SandboxError(f"a sandboxed command runs in its workspace {workspace}, not in {cwd}")
