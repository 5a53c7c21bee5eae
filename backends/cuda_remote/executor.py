import hashlib
import json
import shlex
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from app.store import home
from backends import nvidia, profiler
from backends.cuda_remote import config, confine, digest, job
from backends.cuda_remote.ssh import HostDown, Ssh
from backends.executor import CommandResult, ExecutorError, Profile, Sandbox
from backends.sandbox import SandboxError

OUTPUT_LINES = 2000
DIGEST = Path(digest.__file__).read_bytes()
FACTS = (
    f"{nvidia.SCRIPT}; uname -m; nproc; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; "
    "grep -m1 MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2"
)
q = shlex.quote


class RemoteExecutor:
    """Runs commands on a GPU box over plain SSH: rsync for files, a remote job per command that survives drops."""

    kind = "cuda_remote"

    def __init__(self, name: str = ""):
        self.remote = config.load(name)
        self.ssh = Ssh(self.remote)
        self.python = self.remote.python
        self.frozen: dict[str, dict[str, str]] = {}
        self.reaped: set[str] = set()
        self.unconfinable: str | None = None
        self.sent: list[str] = []
        self.nsys: bool | None = None
        self.prefixes: list[str] | None = None
        self._root = ""

    @property
    def root(self) -> str:
        if not self._root:
            folder = self.remote.workdir.removeprefix("~/") or "."
            self._root = self.ssh.text(f"mkdir -p {q(folder)} && cd {q(folder)} && pwd").strip()
        return self._root

    def where(self, path: Path) -> Path:
        path = Path(path).absolute()
        if path.is_relative_to(home().absolute()):
            return Path(self.root) / path.relative_to(home().absolute())
        return Path(self.root) / "files" / hashlib.sha1(str(path.parent).encode()).hexdigest()[:10] / path.name

    def sync(self, workspace: Path) -> Path:
        dest = self.where(workspace)
        self.sent = self._rsync(workspace, dest, checksum=True)
        return dest

    def place(self, path: Path, readonly: bool = False) -> Path:
        dest = self.where(path)
        if readonly:
            self._freeze(Path(path), dest)
        else:
            self._rsync(Path(path), dest, checksum=False, links=False)
        return dest

    def fetch(self, path: Path, dest: Path) -> Path:
        folder = self.ssh.run(f"test -d {q(str(path))}").returncode == 0
        source, target = (f"{path}/", f"{dest}/") if folder else (str(path), str(dest))
        Path(dest if folder else Path(dest).parent).mkdir(parents=True, exist_ok=True)
        self._transfer([f"{self.ssh.host}:{source}", target], checksum=True)
        return dest

    def run(
        self,
        command: list[str],
        cwd: Path,
        timeout: float,
        env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        sandbox: Sandbox | None = None,
    ) -> CommandResult:
        env = {**self.remote.env, **(env or {})}
        if sandbox:
            command = self._confine(command, cwd, sandbox, env)
        start = time.monotonic()
        lines: deque[str] = deque(maxlen=OUTPUT_LINES)

        def emit(line: str) -> None:
            lines.append(line)
            if on_line:
                on_line(line)

        running: job.Job | None = None
        owner, jobs = env.get("ATELIER_RUN", ""), f"{self.root}/.jobs"
        try:
            if owner and owner not in self.reaped:
                self._reap(jobs, owner, emit)
            running = job.start(self.ssh, jobs, command, str(cwd), env, owner)
            ended = job.follow(self.ssh, running, start + timeout, emit)
            if not ended:
                job.kill(self.ssh, running)
            code = job.finish(self.ssh, running, emit)
            tampered = self.tampered()
        except HostDown as e:
            left = f"the command was left in {running.dir} (pid {running.pid}); " if running else ""
            raise HostDown(f"{e}; {left}{_resume(env)}") from e
        for problem in tampered:
            emit(f"CHECK FAIL read-only input {problem}")
        output, seconds = "\n".join(lines), time.monotonic() - start
        return CommandResult(command, code if ended else None, output, seconds, not ended, "; ".join(tampered))

    def tampered(self) -> list[str]:
        """Each read-only file whose remote copy differs from what was sent; those are sent again next time."""
        if not self.frozen:
            return []
        found = json.loads(self._digest(list(self.frozen)))
        problems = []
        for root, expected in list(self.frozen.items()):
            got = found.get(root, {})
            name = Path(root).name
            changed = [f"{name}/{p}: modified" for p in expected if p in got and got[p] != expected[p]]
            changed += [f"{name}/{p}: deleted" for p in expected if p not in got]
            changed += [f"{name}/{p}: added" for p in got if p not in expected]
            if changed:
                del self.frozen[root]
            problems += [f"{c} on {self.ssh.host}" for c in changed]
        return problems

    def shell(self, script: str) -> str:
        """A probe's output, with the executor's env set (a PATH there finds nvidia-smi and nsys as commands do)."""
        exports = "".join(f"export {q(f'{k}={v}')}; " for k, v in self.remote.env.items())
        return self.ssh.text(exports + script)

    def profile(
        self,
        command: list[str],
        cwd: Path,
        out: Path,
        timeout: float,
        env: dict[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> Profile:
        """nsys when the host has it on its PATH (with the executor's env), else torch.profiler; the raw report
        stays on the host, in out's remote copy."""
        if self.nsys is None:
            self.nsys = bool(self.shell("command -v nsys || true").strip())
        tool = "nsys" if self.nsys else "torch"
        return profiler.run(self, tool, command, cwd, out, timeout, env, sandbox)

    def hardware(self) -> dict[str, str]:
        facts = described(self.ssh.host, self.shell(FACTS))
        if self.ssh.checking() != "yes":
            facts["host_key_check"] = f"StrictHostKeyChecking {self.ssh.checking()} (from your ssh config)"
        return facts

    def close(self) -> None:
        self.ssh.close()

    def _confine(self, command: list[str], cwd: Path, sandbox: Sandbox, env: dict[str, str]) -> list[str]:
        confine.check_cwd(cwd, self.where(sandbox.workspace))
        self._usable()
        return confine.wrap(self.python, command, self._there(sandbox), sorted(env), self._interpreter())

    def discard(self, path: Path) -> None:
        self.ssh.run(f"rm -rf {q(str(self.where(path)))}")

    def launcher(self, sandbox: Sandbox) -> list[str]:
        self._usable()
        return confine.prefix(self.python, self._there(sandbox), (), self._interpreter())

    def _interpreter(self) -> list[str]:
        """The remote Python's environment and installation, which a confined command must see to run it."""
        if self.prefixes is None:
            out = self.ssh.run(f"{q(self.python)} -c {q(confine.PREFIXES)}")
            self.prefixes = sorted(set(out.stdout.decode().splitlines())) if out.returncode == 0 else []
        return self.prefixes

    def _there(self, sandbox: Sandbox) -> Sandbox:
        there = self.where
        return replace(
            sandbox, workspace=there(sandbox.workspace), writable=tuple(there(p) for p in sandbox.writable),
            readable=tuple(there(p) for p in sandbox.readable),
        )  # fmt: skip

    def _usable(self) -> None:
        if self.unconfinable is None:
            self.unconfinable = confine.usable(self.ssh) or ""
        if self.unconfinable:
            raise SandboxError(self.unconfinable)

    def _reap(self, jobs: str, owner: str, emit: Callable[[str], None]) -> None:
        left = job.reap(self.ssh, jobs, owner)
        if left:
            emit(f"atelier: stopped {left} command(s) an earlier process of {owner} left running on {self.ssh.host}")
        self.reaped.add(owner)

    def _freeze(self, path: Path, dest: Path) -> None:
        expected = digest.folder(str(path))
        if self.frozen.get(str(dest)) == expected:
            return
        self.ssh.text(f"mkdir -p {q(str(dest))} && chmod -R u+w {q(str(dest))}")
        self._rsync(path, dest, checksum=True)
        self.ssh.text(f"chmod -R a-w {q(str(dest))}")
        self.frozen[str(dest)] = expected

    def _digest(self, roots: list[str]) -> str:
        out = self.ssh.run(f"{q(self.python)} - {' '.join(q(r) for r in roots)}", input=DIGEST)
        if out.returncode != 0:
            reason = out.stderr.decode(errors="replace").strip()[-300:]
            raise ExecutorError(f"{self.ssh.host}: cannot hash the read-only inputs with {self.python}: {reason}")
        return out.stdout.decode()

    def _rsync(self, path: Path, dest: Path, checksum: bool, links: bool = True) -> list[str]:
        self.ssh.text(f"mkdir -p {q(str(dest.parent))}")
        source = f"{path}/" if Path(path).is_dir() else str(path)
        target = f"{self.ssh.host}:{dest}/" if Path(path).is_dir() else f"{self.ssh.host}:{dest}"
        return self._transfer([source, target], checksum, links)

    def _transfer(self, paths: list[str], checksum: bool, links: bool = True) -> list[str]:
        argv = ["rsync", "-a", "--delete", "-i", "--exclude", ".git", "--exclude", "__pycache__"]
        argv += (["-c"] if checksum else []) + ([] if links else ["--copy-links"])
        argv += ["-e", self.ssh.shell(), *paths]
        for _ in range(self.remote.retries + 1):
            out = subprocess.run(argv, capture_output=True, text=True)
            if out.returncode == 0:
                return [line.split(" ", 1)[1] for line in out.stdout.splitlines() if line[1:2] == "f"]
            self.ssh.fail_if_fatal(out.stderr)
            if out.returncode not in (10, 12, 23, 30, 35, 255):
                raise ExecutorError(f"rsync {' '.join(paths)} failed: {out.stderr.strip()[-300:]}")
            self.ssh.reconnect()
        raise HostDown(f"{self.ssh.host}: rsync kept failing: {out.stderr.strip()[-300:]}")


def described(host: str, text: str) -> dict[str, str]:
    """Hardware facts from FACTS' output: the CPU, and the GPUs nvidia-smi lists or why there are none."""
    gpus, _, cpu = text.rpartition("--\n")
    machine, cores, processor, memory = (cpu.splitlines() + ["?"] * 4)[:4]
    facts = {"host": host, "machine": machine, "processor": processor.strip(), "cores": cores}
    facts["memory_gib"] = f"{int(memory) / 2**20:.1f}" if memory.isdigit() else "?"
    return {**facts, **nvidia.facts(gpus)}


def _resume(env: dict[str, str] | None) -> str:
    run = (env or {}).get("ATELIER_RUN")
    return f"once it is back: atelier resume {run}" if run else "try again once it is back"
