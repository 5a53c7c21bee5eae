"""The system OpenBLAS under MLX on a CPU: MLX's bundled CPU BLAS does fp32 matmuls ~15× slower (Linux wheels)."""

import glob
import os

PATTERNS = (
    "/usr/lib/*/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)


def openblas() -> str | None:
    for pattern in PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def preloaded(env: dict[str, str]) -> dict[str, str]:
    """env with the system OpenBLAS preloaded, or env as it is when there is none."""
    library = openblas()
    if library is None:
        return env
    return {**env, "LD_PRELOAD": " ".join(filter(None, [env.get("LD_PRELOAD"), library]))}


def cpu_only() -> bool:
    """MLX runs on the CPU here (no Metal): dense fp32 weights through OpenBLAS beat quantized ones."""
    return os.uname().sysname != "Darwin"
