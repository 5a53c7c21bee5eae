"""Choose the BLAS under MLX: re-exec this process with the system OpenBLAS preloaded."""

import glob
import os
import sys

MARKER = "PREDICTED_MLX_BLAS"
OPENBLAS_PATTERNS = (
    "/usr/lib/*/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)


def select(blas: str) -> None:
    if blas == "bundled" or os.environ.get(MARKER) == blas:
        return
    library = find_openblas()
    if library is None:
        print("blas=openblas: no system libopenblas found; using the bundled BLAS", file=sys.stderr)
        return
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), library]))
    env = dict(os.environ, LD_PRELOAD=preload, **{MARKER: blas})
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def find_openblas() -> str | None:
    for pattern in OPENBLAS_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None
