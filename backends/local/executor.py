import shutil
import subprocess

from backends import nvidia
from backends.mlx.executor import LocalExecutor


class TorchExecutor(LocalExecutor):
    """Runs commands on this machine for torch stacks (the CPU twins of the CUDA targets)."""

    kind = "local"

    def profiler_tool(self) -> str:
        return "nsys" if shutil.which("nsys") else "torch"

    def hardware(self) -> dict[str, str]:
        import torch

        facts = {k: v for k, v in super().hardware().items() if not k.startswith("mlx")}
        facts["torch_version"] = torch.__version__
        facts["torch_threads"] = str(torch.get_num_threads())
        facts["torch_cuda"] = torch.version.cuda or "none (a CPU build)"
        out = subprocess.run(["sh", "-c", nvidia.SCRIPT], capture_output=True, text=True, timeout=60)
        return {**facts, **nvidia.facts(out.stdout.rpartition("--\n")[0])}
