"""Confinement on the remote host: bubblewrap as locally, started with only the harmless environment."""

from pathlib import Path

from app.sandbox import KEEP, KEEP_PREFIXES, SandboxError, bwrap
from backends.cuda_remote.ssh import Ssh

PROBE = "bwrap --ro-bind / / --dev /dev --proc /proc --unshare-net -- true"
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
    python: str,
    command: list[str],
    workspace: str,
    writable: list[str],
    network: bool,
    passed: list[str],
    readable: list[str],
    hidden: list[str],
) -> list[str]:
    """The remote argv running command read-only everywhere but workspace and writable, private /tmp."""
    if not command:
        raise SandboxError("no command to sandbox")
    environment = [str(Path(python).parent.parent)] if Path(python).is_absolute() else []
    argv = bwrap(workspace, writable, [*readable, *environment], network, (), hidden) + command
    names = [",".join(sorted(KEEP)), ",".join(passed) or "-", ",".join(KEEP_PREFIXES)]
    return [python, "-c", LAUNCH, *names, *argv]


def check_cwd(cwd: Path, workspace: Path) -> None:
    if Path(cwd) != Path(workspace):
        raise SandboxError(f"a sandboxed command runs in its workspace {workspace}, not in {cwd}")
