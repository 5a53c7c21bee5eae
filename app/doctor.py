"""`atelier doctor`: what this machine has for a run, one line each, with the fix for what is missing. Exit 0 when
everything a run needs is there; what only some runs need (OpenBLAS, ssh, agent CLIs) is reported, not required."""

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from app.agents import config
from backends import sandbox
from backends.cuda_remote import config as remote_config
from backends.executor import ConfigError
from backends.mlx import blas

MATMUL_SIDE = 512
USES = {
    "git": "runs are git branches", "ssh": "cuda_remote executors", "rsync": "cuda_remote executors",
    "codex": 'harness = "codex" implementers', "claude": 'harness = "claude" implementers',
}  # fmt: skip


@dataclass
class Finding:
    what: str
    ok: bool
    detail: str
    needed: bool = True

    @property
    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.needed else "note")
        return f"{mark}  {self.what:<14} {self.detail}"


def main() -> int:
    findings = examine()
    for finding in findings:
        print(finding.line)
    failed = [f for f in findings if f.needed and not f.ok]
    print(f"{len(failed)} problem(s): a run cannot start until they are fixed" if failed else "ready for a run")
    return 1 if failed else 0


def examine() -> list[Finding]:
    tools = [_tool("git", True), *(_tool(name, False) for name in ("ssh", "rsync", "codex", "claude"))]
    return [_platform(), _mlx(), _memory(), _sandbox(), _openblas(), *tools, *_endpoints(), *_executors()]


def _platform() -> Finding:
    detail = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    return Finding(
        "platform", sys.version_info >= (3, 11), detail + ("" if sys.version_info >= (3, 11) else ": needs 3.11+")
    )


def _mlx() -> Finding:
    try:
        import mlx.core as mx
    except ImportError as e:
        return Finding("mlx", False, f"not importable ({e}): make setup")
    a = mx.random.normal((MATMUL_SIDE, MATMUL_SIDE))
    mx.eval(a @ a)
    start = time.perf_counter()
    for _ in range(4):
        mx.eval(a @ a)
    seconds = (time.perf_counter() - start) / 4
    gflops = 2 * MATMUL_SIDE**3 / seconds / 1e9
    device = "Metal GPU" if mx.metal.is_available() else "CPU"
    return Finding("mlx", True, f"{device}, fp32 matmul {MATMUL_SIDE}³ at {gflops:.1f} GFLOP/s")


def _memory() -> Finding:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return Finding("memory", True, "unknown", needed=False)
    return Finding("memory", True, f"{total / 2**30:.1f} GiB")


def _sandbox() -> Finding:
    reason = sandbox.available()
    kind = "Seatbelt (sandbox-exec)" if sandbox.MACOS else "bubblewrap"
    if reason is None:
        return Finding("sandbox", True, f"{kind} confines candidates and agents' commands")
    return Finding("sandbox", False, f"{reason} (only --policy tuner runs without one)")


def _openblas() -> Finding:
    if not blas.cpu_only():
        return Finding("openblas", True, "not needed: MLX runs on the GPU", needed=False)
    found = blas.openblas()
    if found:
        return Finding("openblas", True, f"{found} (the blas knob and --llm local use it)", needed=False)
    return Finding("openblas", False, "missing: apt-get install libopenblas0-pthread (CPU runs are much slower)", False)


def _tool(name: str, needed: bool) -> Finding:
    found = shutil.which(name)
    return Finding(name, found is not None, f"{found or 'not found'} ({USES[name]})", needed)


def _endpoints() -> list[Finding]:
    try:
        llm = config.load()
    except ConfigError as e:
        return [Finding("llm config", False, str(e))]
    if llm is None:
        return [Finding("llm", True, f"no endpoint in {config.path()}: the offline tuner runs", needed=False)]
    seen = {(e.base_url, e.model, e.api_key_env): e for e in [llm.llm, *llm.roles.values()]}
    return [_reach(e) for e in seen.values()]


def _reach(endpoint: config.Endpoint) -> Finding:
    import openai

    name = f"llm {endpoint.model}"[:14]
    key = "key from $" + endpoint.api_key_env if endpoint.api_key_env else "no key"
    if endpoint.api_key_env and not endpoint.api_key:
        return Finding(name, False, f"{endpoint.base_url}: ${endpoint.api_key_env} is not set")
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "none", timeout=5, max_retries=0)
    try:
        client.models.list()
    except openai.AuthenticationError:
        return Finding(name, False, f"{endpoint.base_url}: the key was refused ({key})")
    except openai.APIStatusError as e:
        return Finding(name, True, f"{endpoint.base_url} answers (GET /models: HTTP {e.status_code}; {key})")
    except openai.APIConnectionError:
        return Finding(name, False, f"{endpoint.base_url} is unreachable ({key})")
    return Finding(name, True, f"{endpoint.base_url} reachable ({key})")


def _executors() -> list[Finding]:
    try:
        remotes = remote_config.configured()
    except ConfigError as e:
        return [Finding("executors", False, str(e))]
    return [_resolves(r) for r in remotes]


def _resolves(remote: remote_config.Remote) -> Finding:
    """The host as ssh would reach it (its config applied), without connecting: `atelier remote check` connects."""
    argv = ["ssh", "-G", remote.host] + (["-F", remote.ssh_config] if remote.ssh_config else [])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Finding(f"cuda_remote:{remote.name}"[:14], False, f"ssh cannot read its config: {e}", needed=False)
    facts = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    where = f"{facts.get('hostname', remote.host)}:{remote.port or facts.get('port', 22)}"
    return Finding(f"cuda_remote:{remote.name}"[:14], out.returncode == 0,
                   f"{where}; `atelier remote check {remote.name}` connects and probes it", needed=False)  # fmt: skip
