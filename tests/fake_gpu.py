"""Stand-ins for an H100 box's nvidia-smi and nsys, for the remote executor's tests on this GPU-less machine.
They answer the command lines real ones answer, with output in the real tools' formats."""

import sys
from pathlib import Path

NVIDIA_SMI = '''
import sys

GPU = {
    "name": "NVIDIA H100 80GB HBM3", "count": "2", "memory.total": "81559", "memory.used": "1021",
    "memory.free": "80538", "driver_version": "550.54.15", "clocks.sm": "345", "clocks.max.sm": "1980",
    "clocks.mem": "2619", "clocks.max.memory": "2619", "clocks.max.mem": "2619", "power.limit": "700.00",
    "power.draw": "71.23", "temperature.gpu": "31", "utilization.gpu": "0",
}
BANNER = """Tue Nov 24 14:20:57 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |                    0 |
| N/A   31C    P0             71W /  700W |    1021MiB /  81559MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+"""
args = sys.argv[1:]
query = next((a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")), None)
if query is None:
    print(BANNER)
    sys.exit(0)
if "--format=csv,noheader,nounits" not in args:
    sys.exit("this stand-in answers --format=csv,noheader,nounits only")
fields = query.split(",")
unknown = [f for f in fields if f not in GPU]
if unknown:
    print(f'Field "{unknown[0]}" is not a valid field to query.')
    sys.exit(2)
for _ in range(int(GPU["count"])):
    print(", ".join(GPU[f] for f in fields))
'''

NSYS = """
import os
import subprocess
import sys

VERSION = "NVIDIA Nsight Systems version 2024.2.1.106-242134037904v0"
REPORTS = "/opt/nvidia/nsight-systems/2024.2.1/host-linux-x64/reports"
KERNELS = [f"void at::native::elementwise_kernel<128, 2, gemm_epilogue_{i}>(int, T3)" for i in range(25)]
TABLES = {
    "cuda_gpu_kern_sum": ("CUDA GPU Kernel Summary", "Instances", [(41.3, 812345678, 9600, k) for k in KERNELS]),
    "cuda_api_sum": ("CUDA API Summary", "Num Calls", [(62.0, 1523456789, 48210, "cudaLaunchKernel"),
                                                       (30.1, 740112233, 1210, "cudaMemcpyAsync"),
                                                       (7.9, 194455667, 1200, "cudaStreamSynchronize")]),
    "cuda_gpu_mem_time_sum": ("CUDA GPU MemOps Summary (by Time)", "Count",
                              [(88.2, 120334455, 1200, "[CUDA memcpy Host-to-Device]"),
                               (11.8, 16112233, 10, "[CUDA memcpy Device-to-Host]")]),
}


def table(name):
    title, count, rows = TABLES[name]
    print(f"\\n ** {title} ({name}):\\n")
    print(f" Time (%)  Total Time (ns)  {count:>9}  Avg (ns)   Med (ns)   Name")
    print(" --------  ---------------  ---------  ---------  ---------  ----------------------------------")
    for share, total, n, what in rows:
        print(f" {share:8.1f}  {total:15d}  {n:9d}  {total / n:9.1f}  {total / n:9.1f}  {what}")
    print()


args = sys.argv[1:]
if args == ["--version"]:
    print(VERSION)
elif args[:1] == ["profile"]:
    rest, output = args[1:], "report1"
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option.startswith("--output="):
            output = option.split("=", 1)[1]
    print("Collecting data...", flush=True)
    code = subprocess.call(rest)
    with open(output + ".nsys-rep", "wb") as f:
        f.write(b"stand-in for a Nsight Systems report")
    print(f"Generated:\\n    {os.path.abspath(output)}.nsys-rep")
    sys.exit(code)
elif args[:1] == ["stats"]:
    report = args[-1]
    if not os.path.exists(report):
        sys.exit(f"ERROR: {report} does not exist.")
    sqlite = report.replace(".nsys-rep", ".sqlite")
    print(f"Generating SQLite file {sqlite} from {report}")
    names = [args[i + 1] for i, a in enumerate(args) if a == "--report"] or list(TABLES)
    for name in names:
        print(f"Processing [{sqlite}] with [{REPORTS}/{name}.py]... ")
        table(name)
else:
    sys.exit(f"unknown command {args}")
"""


def install(folder: Path, *names: str) -> None:
    """Writes the named stand-ins (nvidia-smi, nsys) into folder as executables run by this Python."""
    for name in names:
        body = {"nvidia-smi": NVIDIA_SMI, "nsys": NSYS}[name]
        tool = folder / name
        tool.write_text(f"#!{sys.executable}\n{body.lstrip()}")
        tool.chmod(0o755)
