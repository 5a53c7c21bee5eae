"""What a remote host has and lacks for Atelier, each lack with its fix."""

import shlex
import shutil
from dataclasses import dataclass

from backends.cuda_remote.executor import RemoteExecutor

MIN_FREE_GIB = 20
PROBE = """
py={python}
echo "python=$("$py" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)"
echo "torch=$("$py" -c 'import torch, importlib.util as u
print(torch.__version__, torch.cuda.is_available(), bool(u.find_spec("torch.profiler")))' 2>/dev/null)"
echo "nsys=$(nsys --version 2>/dev/null | head -1)"
echo "free_kib=$(df -Pk {root} | tail -1 | awk '{{print $4}}')"
echo "writable=$(touch {root}/.atelier-probe 2>/dev/null && rm {root}/.atelier-probe && echo yes)"
echo "bwrap=$(bwrap --ro-bind / / --dev /dev --proc /proc --unshare-net -- true 2>/dev/null && echo works)"
echo "rsync=$(rsync --version 2>/dev/null | head -1)"
"""


@dataclass
class Finding:
    what: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False


def check(executor: RemoteExecutor) -> list[Finding]:
    r, ssh = executor.remote, executor.ssh
    found = [Finding("connection", True, f"{ssh.host} as {ssh.settings.get('user', '?')}", required=True)]
    keys = ssh.checking()
    found.append(
        Finding(
            "host key",
            keys == "yes",
            f"StrictHostKeyChecking {keys}",
            f"drop StrictHostKeyChecking {keys} for {ssh.host} from your ssh config",
        )
    )
    root = executor.root
    facts = dict(
        line.partition("=")[::2]
        for line in executor.shell(PROBE.format(python=shlex.quote(r.python), root=root)).splitlines()
        if "=" in line
    )
    return found + _findings(executor, facts, executor.hardware())


def gpu(facts: dict[str, str]) -> str:
    """The GPU line from the hardware facts; what nvidia-smi said when there is none."""
    if facts["gpu"].startswith("none"):
        return facts["gpu"]
    count = f" ×{facts['gpu_count']}" if facts.get("gpu_count", "1") != "1" else ""
    return (
        f"{facts['gpu']}{count}, {facts['gpu_memory_total_mib']} MiB, driver {facts['driver']}, "
        f"CUDA {facts['cuda']}, {facts['power_limit_w']} W limit"
    )


def _findings(executor: RemoteExecutor, facts: dict[str, str], hardware: dict[str, str]) -> list[Finding]:
    r, host = executor.remote, executor.ssh.host
    config = f"python in [executors.{r.name}]"
    torch, cuda, profiler = (facts.get("torch", "").split() + ["", "", ""])[:3]
    free = int(facts["free_kib"]) / 2**20 if facts.get("free_kib", "").isdigit() else 0.0
    local_rsync = shutil.which("rsync")
    return [
        Finding("python", bool(facts.get("python")), f"{facts.get('python') or 'not found'} ({r.python})",
                f"install Python 3 on {host} or set {config}", required=True),
        Finding("rsync", bool(facts.get("rsync")) and bool(local_rsync),
                f"remote: {facts.get('rsync') or 'missing'}; here: {local_rsync or 'missing'}",
                "apt-get install rsync (on both machines)", required=True),
        Finding("work dir", facts.get("writable") == "yes", f"{executor.root}, {free:.1f} GiB free",
                f"make {executor.root} writable or set workdir in [executors.{r.name}]", required=True),
        Finding("disk", free >= MIN_FREE_GIB, f"{free:.1f} GiB free in the work dir",
                f"free at least {MIN_FREE_GIB} GiB for models and runs"),
        Finding("torch", bool(torch), torch or "not importable", f"{r.python} -m pip install torch on {host}"),
        Finding("CUDA", cuda == "True", "torch sees CUDA" if cuda == "True" else "torch sees no CUDA device",
                "install a CUDA build of torch and the NVIDIA driver"),
        Finding("GPU", not hardware["gpu"].startswith("none"), gpu(hardware),
                "install the NVIDIA driver (nvidia-smi must list the GPU)"),
        Finding("nsys", bool(facts.get("nsys")), facts.get("nsys") or "not found (profiles use torch.profiler)",
                f"install Nsight Systems (the CUDA toolkit's nsight-systems package) on {host} and put nsys on "
                f"PATH, or set PATH in [executors.{r.name}.env]"),
        Finding("profiler", profiler == "True",
                "torch.profiler importable" if profiler == "True" else "no torch.profiler (profiles use cProfile)",
                f"{r.python} -m pip install torch on {host}"),
        Finding("sandbox", facts.get("bwrap") == "works", "bubblewrap works" if facts.get("bwrap") else "no bwrap",
                "apt-get install bubblewrap (and allow unprivileged user namespaces)"),
    ]  # fmt: skip
