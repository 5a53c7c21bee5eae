"""GPU facts from nvidia-smi: the shell script that asks for them and the facts its output gives."""

import re

FIELDS = {
    "name": "gpu",
    "count": "gpu_count",
    "memory.total": "gpu_memory_total_mib",
    "memory.used": "gpu_memory_used_mib",
    "driver_version": "driver",
    "clocks.max.sm": "sm_clock_max_mhz",
    "clocks.max.memory": "memory_clock_max_mhz",
    "power.limit": "power_limit_w",
}
QUERY = f"nvidia-smi --query-gpu={','.join(FIELDS)} --format=csv,noheader,nounits"
SCRIPT = (
    f"if command -v nvidia-smi >/dev/null 2>&1; then {QUERY} 2>&1; echo --; "
    "nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*'; else echo 'nvidia-smi not found'; echo --; fi; "
    "echo --"
)


def facts(text: str) -> dict[str, str]:
    """The first GPU's facts from SCRIPT's output (rows, `--`, the CUDA version, `--`); one `gpu` fact saying
    why when there is none."""
    rows_text, _, cuda = text.partition("--\n")
    lines = [line.strip() for line in rows_text.splitlines() if line.strip()]
    rows = [[v.strip() for v in line.split(",")] for line in lines if line.count(",") == len(FIELDS) - 1]
    if not rows:
        return {"gpu": f"none ({_why(lines)})"}
    found = dict(zip(FIELDS.values(), rows[0], strict=True))
    names = sorted({row[0] for row in rows})
    found["gpu"] = " + ".join(names) if len(names) > 1 else names[0]
    version = re.search(r"CUDA Version: *([0-9.]+)", cuda)
    found["cuda"] = version.group(1) if version else "unknown"
    return found


def _why(lines: list[str]) -> str:
    if lines == ["nvidia-smi not found"]:
        return "nvidia-smi not found"
    return f"nvidia-smi: {lines[0]}" if lines else "nvidia-smi listed no GPU"
