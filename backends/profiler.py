"""A command run once under a profiler where an executor runs it: nsys when the host has it, else the command's
Python program under torch.profiler or cProfile (pyprofile.py, sent along). The summary comes back as text."""

from dataclasses import replace
from pathlib import Path

from backends import pyprofile
from backends.executor import CommandResult, Executor, Profile, Sandbox

SCRIPT = Path(pyprofile.__file__)
ROWS = 20
NSYS_REPORTS = ("cuda_gpu_kern_sum", "cuda_api_sum", "cuda_gpu_mem_time_sum")
NOISE = ("Generating SQLite file", "Processing [")


def run(
    x: Executor, tool: str, command: list[str], cwd: Path, out: Path, timeout: float,
    env: dict[str, str] | None = None, sandbox: Sandbox | None = None,
) -> Profile:  # fmt: skip
    """tool: nsys, torch or cProfile; out: a local folder for the raw report, made available where x runs."""
    out.mkdir(parents=True, exist_ok=True)
    there = x.place(out)
    if sandbox:
        sandbox = replace(sandbox, writable=(*sandbox.writable, out), readable=(*sandbox.readable, SCRIPT))
    if tool == "nsys":
        return _nsys(x, command, cwd, there, timeout, env, sandbox)
    program = python_args(command, x.python)
    if program is None:
        why = f"`{command[0]}` is not a Python command and nsys is not installed where it runs"
        return Profile("none", f"no profiler for this benchmark: {why}", ok=False)
    raw = there / f"{tool}.txt"
    argv = [command[0], str(x.place(SCRIPT)), tool, str(raw), "--", *program]
    result = x.run(argv, cwd, timeout, env, sandbox=sandbox)
    found = marked(result.output)
    if not result.ok or found is None:
        return failed(tool, result)
    name, summary = found
    return Profile(name, summary, str(raw))


def python_args(command: list[str], python: str) -> list[str] | None:
    """What follows the interpreter when the command runs Python, else None."""
    if command and (command[0] == python or Path(command[0]).name.startswith("python")):
        return command[1:]
    return None


def marked(output: str) -> tuple[str, str] | None:
    """The profiler's name and table pyprofile printed between its markers."""
    head, begin, rest = output.rpartition(pyprofile.BEGIN)
    if not begin or pyprofile.END not in rest:
        return None
    name, _, table = rest.partition(pyprofile.END)[0].partition("\n")
    return name.strip(), table.strip("\n")


def tables(text: str, rows: int = ROWS) -> str:
    """nsys stats' text without its progress lines, each table cut to its first rows."""
    kept: list[str] = []
    body, dropped = -1, 0
    for line in text.splitlines() + [""]:
        if line.startswith(NOISE):
            continue
        if line.strip() and set(line.strip()) <= {"-", " "}:
            body, dropped = 0, 0
        elif body >= 0 and not line.strip():
            kept += [f" [{dropped} more rows]"] if dropped else []
            body = -1
        elif body >= 0:
            body += 1
            if body > rows:
                dropped += 1
                continue
        kept.append(line)
    return "\n".join(kept).strip("\n")


def failed(tool: str, result: CommandResult) -> Profile:
    status = f"timed out after {result.seconds:.0f} s" if result.timed_out else f"exit code {result.exit_code}"
    return Profile(tool, f"the benchmark failed under {tool} ({status}):\n{result.tail(30)}", ok=False)


def _nsys(
    x: Executor, command: list[str], cwd: Path, there: Path, timeout: float, env: dict[str, str] | None,
    sandbox: Sandbox | None,
) -> Profile:  # fmt: skip
    report = there / "report"
    argv = ["nsys", "profile", "--force-overwrite=true", f"--output={report}", *command]
    result = x.run(argv, cwd, timeout, env, sandbox=sandbox)
    if not result.ok:
        return failed("nsys", result)
    reports = [arg for name in NSYS_REPORTS for arg in ("--report", name)]
    stats = x.run(
        ["nsys", "stats", "--force-export=true", *reports, f"{report}.nsys-rep"], cwd, timeout, env, sandbox=sandbox
    )
    if not stats.ok:
        return failed("nsys stats", stats)
    return Profile("nsys", tables(stats.output), f"{report}.nsys-rep")
