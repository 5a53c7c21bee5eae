import os
import re
import shlex
import subprocess
import tempfile
import time
from functools import cached_property
from pathlib import Path

from backends.cuda_remote.config import Remote
from backends.executor import ExecutorError

MAX_WAIT = 30.0


class HostDown(ExecutorError):
    pass


class HostKeyError(ExecutorError):
    pass


class Ssh:
    """The system OpenSSH client with one shared connection (ControlMaster) per host, reconnecting with backoff."""

    def __init__(self, remote: Remote):
        self.remote = remote
        self.sockets = Path(tempfile.gettempdir()) / f"atelier-ssh-{os.getuid()}"
        self.sockets.mkdir(mode=0o700, exist_ok=True)

    @property
    def host(self) -> str:
        return self.remote.host

    def options(self) -> list[str]:
        r = self.remote
        argv = ["-F", str(Path(r.ssh_config).expanduser())] if r.ssh_config else []
        argv += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"]
        argv += ["-o", "ServerAliveCountMax=3", "-o", "ControlMaster=auto", "-o", "ControlPersist=120"]
        argv += ["-o", f"ControlPath={self.sockets}/%C"]
        if r.user:
            argv += ["-l", r.user]
        if r.port:
            argv += ["-p", str(r.port)]
        if r.identity:
            argv += ["-i", str(Path(r.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        return argv + (["-o", "StrictHostKeyChecking=yes"] if self.checking() == "yes" else [])

    def argv(self, script: str) -> list[str]:
        return ["ssh", *self.options(), self.host, script]

    def shell(self) -> str:
        """The ssh command line rsync's -e wants."""
        return shlex.join(["ssh", *self.options()])

    @cached_property
    def settings(self) -> dict[str, str]:
        """The client's effective settings for this host (`ssh -G`), user config included."""
        r = self.remote
        argv = ["ssh", "-G"] + (["-F", str(Path(r.ssh_config).expanduser())] if r.ssh_config else [])
        argv += (["-l", r.user] if r.user else []) + (["-p", str(r.port)] if r.port else []) + [self.host]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise ExecutorError(f"executors.{r.name}: ssh cannot read its config for {self.host}: {_last(out.stderr)}")
        return dict(line.partition(" ")[::2] for line in out.stdout.splitlines())

    def checking(self) -> str:
        value = self.settings.get("stricthostkeychecking", "ask")
        return {"ask": "yes", "true": "yes", "false": "no"}.get(value, value)

    def run(self, script: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """The script's own result; retried on a lost connection until the host is back or the retries run out."""
        for attempt in range(self.remote.retries + 1):
            try:
                out = subprocess.run(self.argv(script), input=input, capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                out = subprocess.CompletedProcess([], 255, b"", f"no answer in {timeout:g} s".encode())
            if out.returncode != 255:
                return out
            self.fail_if_fatal(out.stderr.decode(errors="replace"))
            if attempt < self.remote.retries:
                self.wait(attempt)
        raise self.down(out.stderr.decode(errors="replace"))

    def text(self, script: str, input: bytes | None = None, timeout: float = 120) -> str:
        out = self.run(script, input, timeout)
        if out.returncode != 0:
            raise ExecutorError(f"{self.host}: `{script[:80]}` exited {out.returncode}: {_last(out.stderr.decode())}")
        return out.stdout.decode(errors="replace")

    def reconnect(self) -> None:
        """Back once `true` runs on the host again; HostDown after the retries."""
        self.text("true")

    def wait(self, attempt: int) -> None:
        time.sleep(min(MAX_WAIT, self.remote.backoff * 2**attempt))

    def fail_if_fatal(self, stderr: str) -> None:
        if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
            raise HostKeyError(self._host_key_message(stderr))
        for fatal in ("Permission denied", "Could not resolve hostname", "Bad configuration", "ControlPath too long"):
            if fatal in stderr:
                raise ExecutorError(f"{self.host}: {_last(stderr)} (check [executors.{self.remote.name}])")

    def down(self, stderr: str) -> HostDown:
        tries = self.remote.retries + 1
        return HostDown(f"{self.host}: unreachable after {tries} attempts ({_last(stderr) or 'connection lost'})")

    def _host_key_message(self, stderr: str) -> str:
        name = self.settings.get("hostname", self.host)
        port = self.settings.get("port", "22")
        entry = name if port == "22" else f"[{name}]:{port}"
        found = re.search(r"Offending \S+ key in (\S+):(\d+)", stderr)
        if found:
            file, line = found.groups()
            return (
                f"{self.host}: its host key does not match {file} line {line}; refusing to connect. If the box was "
                f"reinstalled, check its new key's fingerprint with whoever runs it, then `ssh-keygen -R '{entry}' "
                f"-f {file}` and `ssh {self.host}` once to record the new key"
            )
        files = self.settings.get("userknownhostsfile", "~/.ssh/known_hosts")
        return (
            f"{self.host}: no known host key for {entry} in {files}; refusing to connect. Run `ssh {self.host}` "
            "once, check the fingerprint it shows, and accept it"
        )

    def master(self) -> int | None:
        """The pid of the shared connection's process, if one is up."""
        out = subprocess.run(["ssh", *self.options(), "-O", "check", self.host], capture_output=True, text=True)
        found = re.search(r"pid=(\d+)", out.stderr)
        return int(found.group(1)) if found else None

    def close(self) -> None:
        subprocess.run(["ssh", *self.options(), "-O", "exit", self.host], capture_output=True, timeout=30)


def _last(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
