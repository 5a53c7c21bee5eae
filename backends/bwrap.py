"""The allow-list as bubblewrap's arguments (Linux, here and on a remote host)."""

from backends.allowlist import Spec


def arguments(spec: Spec) -> list[str]:
    """bubblewrap's arguments up to the environment: a private /tmp, /dev and /proc; own PID, IPC and UTS
    namespaces and a new session (no ptrace, signals or terminal input outside); no network unless asked for (the
    candidate of a confined harness shares the harness's private network)."""
    argv = ["bwrap"]
    if spec.whole:
        argv += ["--ro-bind", "/", "/"]
    else:
        argv += [arg for path in spec.toolchain for arg in ("--ro-bind-try", path, path)]
        argv += [arg for path in spec.masked_files for arg in ("--ro-bind", "/dev/null", path)]
        argv += [arg for path in spec.masked_dirs for arg in ("--tmpfs", path)]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", spec.scratch]
    if not (spec.whole and spec.network):
        argv += ["--tmpfs", "/run"]
    for path in spec.readable:
        argv += ["--ro-bind", path, path]
    for path in spec.writes:
        argv += ["--bind", path, path]
    for path in spec.frozen:
        argv += ["--ro-bind", path, path]
    if not spec.network:
        argv += ["--unshare-net"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session", "--die-with-parent"]
    return argv + ["--chdir", spec.workspace]
