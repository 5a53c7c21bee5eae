"""A command on the remote host that outlives its connection: own session, a log file, its exit code in a file."""

import os
import secrets
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from backends.cuda_remote.ssh import Ssh
from backends.executor import ExecutorError

q = shlex.quote


@dataclass
class Job:
    dir: str
    pid: int
    offset: int = 0
    partial: bytes = b""


def start(ssh: Ssh, jobs: str, command: list[str], cwd: str, env: dict[str, str], owner: str = "") -> Job:
    path = f"{jobs}/{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    job = q(path)
    assignments = " ".join(q(f"{k}={v}") for k, v in env.items())
    body = f"cd {q(cwd)} && exec env {assignments} {shlex.join(command)}"
    inner = (
        f"echo $$ > {job}/pid.tmp && mv {job}/pid.tmp {job}/pid; ( {body} ) > {job}/log 2>&1; "
        f"echo $? > {job}/exit.tmp; mv {job}/exit.tmp {job}/exit"
    )
    launch = (
        f"mkdir -p {q(jobs)} && if mkdir {job} 2>/dev/null; then echo {q(owner)} > {job}/owner; "
        f"setsid sh -c {q(inner)} </dev/null >/dev/null 2>&1 & "
        f"fi; i=0; while [ ! -s {job}/pid ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; cat {job}/pid"
    )
    pid = ssh.text(launch).strip()
    if not pid.isdigit():
        raise ExecutorError(f"{ssh.host}: the remote job in {job} did not start")
    return Job(path, int(pid))


def follow(ssh: Ssh, job: Job, deadline: float, emit: Callable[[str], None]) -> bool:
    """Streams the log from the offset reached so far until the job ends (True) or the deadline (False).
    A dropped connection is reconnected and the same job followed on from the same byte."""
    while (left := deadline - time.monotonic()) > 0:
        code, stderr = _tail(ssh, job, left, emit)
        if code is None:
            return False
        if code != 255:
            return True
        ssh.fail_if_fatal(stderr)
        ssh.reconnect()
    return False


def finish(ssh: Ssh, job: Job, emit: Callable[[str], None]) -> int | None:
    if job.partial:
        emit(job.partial.decode(errors="replace"))
        job.partial = b""
    out = ssh.text(f"cat {q(job.dir)}/exit 2>/dev/null; true")
    ssh.text(f"rm -rf {q(job.dir)}")
    return int(out) if out.strip().lstrip("-").isdigit() else None


def kill(ssh: Ssh, job: Job) -> None:
    ssh.text(f"kill -s KILL -- -{job.pid} 2>/dev/null; true")


def reap(ssh: Ssh, jobs: str, owner: str) -> int:
    """Kills the jobs of this owner that an earlier process left behind; how many were still running."""
    script = (
        f'n=0; for d in {q(jobs)}/*/; do [ "$(cat "$d/owner" 2>/dev/null)" = {q(owner)} ] || continue; '
        '[ -e "$d/exit" ] || { kill -s KILL -- "-$(cat "$d/pid")" 2>/dev/null && n=$((n+1)); }; '
        'rm -rf "$d"; done; echo $n'
    )
    return int(ssh.text(script).strip() or 0)


def _tail(ssh: Ssh, job: Job, left: float, emit: Callable[[str], None]) -> tuple[int | None, str]:
    log, start = f"{q(job.dir)}/log", f"-c +{job.offset + 1}"
    follow = f"tail -s 0.2 {start} --pid={job.pid} -F {log}"
    script = f"if [ -e {q(job.dir)}/exit ]; then tail {start} {log}; else {follow}; fi"
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(ssh.argv(script), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        reader = threading.Thread(target=_read, args=(proc, job, emit), daemon=True)
        reader.start()
        try:
            code: int | None = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        reader.join(timeout=10)
        errors.seek(0)
        return code, errors.read().decode(errors="replace")


def _read(proc: subprocess.Popen, job: Job, emit: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 1 << 16):
        job.offset += len(chunk)
        lines = (job.partial + chunk).split(b"\n")
        job.partial = lines.pop()
        for line in lines:
            emit(line.decode(errors="replace"))
