"""Where commands run, as knobs and defaults name it: a Linux CPU, a Mac's Metal GPU (or its CPU), a CUDA host."""

import os
import sys

PLATFORMS = ("linux-cpu", "macos-metal", "macos-cpu", "cuda")
STAND_IN = "ATELIER_PLATFORM"  # what Atelier believes this machine is (tests, dry runs)


def here() -> str:
    if os.environ.get(STAND_IN):
        return os.environ[STAND_IN]
    if sys.platform != "darwin":
        return "linux-cpu"
    import mlx.core as mx

    return "macos-metal" if mx.metal.is_available() else "macos-cpu"


def of(executor_kind: str) -> str:
    """Where an executor's commands run: a remote CUDA host, or this machine."""
    return "cuda" if executor_kind.startswith("cuda_remote") else here()
