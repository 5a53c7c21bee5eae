"""A throwaway OpenSSH server on 127.0.0.1 and an Atelier config pointing at it, for the SSH executor's tests."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Server:
    dir: Path
    port: int
    user_key: Path
    host_key: Path

    @property
    def pid(self) -> int:
        return int((self.dir / "sshd.pid").read_text())

    def start(self) -> "Server":
        Path("/run/sshd").mkdir(exist_ok=True)
        subprocess.run([str(SSHD), "-f", str(self.dir / "sshd_config"), "-E", str(self.dir / "sshd.log")], check=True)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError((self.dir / "sshd.log").read_text())

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except (ProcessLookupError, FileNotFoundError):
            pass


def require() -> None:
    """Skips the calling test without OpenSSH and rsync here (fails it under CI, which installs them)."""
    import pytest

    missing = [p for p in (str(SSHD), "rsync", "ssh") if not shutil.which(p)]
    if missing:
        message = f"needs {', '.join(missing)}: apt-get install openssh-server openssh-client rsync"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def serve(dir: Path) -> Server:
    dir.mkdir(parents=True)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(dir / name)], check=True)
    shutil.copy(dir / "user_key.pub", dir / "authorized_keys")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {
        "Port": port, "ListenAddress": "127.0.0.1", "HostKey": dir / "host_key", "PidFile": dir / "sshd.pid",
        "AuthorizedKeysFile": dir / "authorized_keys", "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no", "UsePAM": "no", "StrictModes": "no",
    }  # fmt: skip
    (dir / "sshd_config").write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
    (dir / "known_hosts").write_text(f"[127.0.0.1]:{port} {(dir / 'host_key.pub').read_text()}")
    return Server(dir, port, dir / "user_key", dir / "host_key").start()


def configure(server: Server, tmp_path: Path, monkeypatch, name: str = "box") -> Path:
    alias = f"atelier-test-{server.port}"
    ssh_config = tmp_path / f"ssh_config_{name}"
    ssh_config.write_text(
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  IdentityFile {server.user_key}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {server.dir / 'known_hosts'}\n"
    )
    file = tmp_path / "config.toml"
    file.write_text(
        f'[executors.{name}]\nhost = "{alias}"\nssh_config = "{ssh_config}"\n'
        f'workdir = "{tmp_path / "remote"}"\npython = "{sys.executable}"\nretries = 2\nbackoff = 0.2\n'
        f'[executors.{name}.env]\nATELIER_REMOTE_TEST = "yes"\n'
    )
    monkeypatch.setenv("ATELIER_CONFIG", str(file))
    return file
