from backends.mlx.executor import LocalExecutor


class TorchExecutor(LocalExecutor):
    """Runs commands on this machine for torch stacks (the CPU twins of the CUDA targets)."""

    kind = "local"

    def hardware(self) -> dict[str, str]:
        import torch

        facts = {k: v for k, v in super().hardware().items() if not k.startswith("mlx")}
        facts["torch_version"] = torch.__version__
        facts["torch_threads"] = str(torch.get_num_threads())
        facts["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        return facts
