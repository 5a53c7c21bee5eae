"""Runs a Python program (what follows `python`: a script, `-m module` or `-c code`, and its arguments) under
torch.profiler or cProfile, prints the top of the profile between markers and writes all of it to a file.
Runs on the host by itself: `python pyprofile.py torch|cProfile RAW_FILE -- PROGRAM...`."""

import cProfile
import io
import os
import pstats
import runpy
import sys

ROWS = 20
BEGIN, END = "ATELIER PROFILE BEGIN", "ATELIER PROFILE END"
FLAGS = ("-u", "-B", "-O", "-OO", "-s", "-E", "-I", "-P")


def program(args: list[str]) -> tuple[str, str, list[str]]:
    """How to start the program (path, module or code), what to start, and its sys.argv."""
    while args and args[0] in FLAGS:
        args = args[1:]
    if not args:
        raise SystemExit("pyprofile: no program to run")
    if args[0] in ("-m", "-c") and len(args) > 1:
        return ("module" if args[0] == "-m" else "code"), args[1], [args[0], *args[2:]]
    return "path", args[0], args


def start(kind: str, what: str) -> int:
    try:
        if kind == "module":
            runpy.run_module(what, run_name="__main__", alter_sys=True)
        elif kind == "code":
            exec(compile(what, "<string>", "exec"), {"__name__": "__main__"})
        else:
            runpy.run_path(what, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return 0


def under_torch(run) -> tuple[str, int, str, str]:
    """torch.profiler's operator table; cProfile's functions when the program ran no torch operator."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as p:
        tool, code, top, full = under_cprofile(run)
    events = p.key_averages()
    if not len(events):
        return f"{tool} (torch.profiler saw no torch operator)", code, top, full
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    tool = f"torch.profiler ({'CPU + CUDA' if cuda else 'CPU'})"
    return tool, code, events.table(sort_by=sort, row_limit=ROWS), events.table(sort_by=sort, row_limit=-1)


def under_cprofile(run) -> tuple[str, int, str, str]:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        code = run()
    finally:
        profiler.disable()

    def table(*rows: int) -> str:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(*rows)
        return out.getvalue().strip("\n")

    return "cProfile", code, table(ROWS), table()


def main() -> int:
    tool, raw, args = sys.argv[1], sys.argv[2], sys.argv[4:]
    kind, what, sys.argv = program(args)
    sys.path[0] = os.path.dirname(os.path.abspath(what)) if kind == "path" else os.getcwd()
    profiler = under_cprofile
    if tool == "torch":
        try:
            import torch.profiler  # noqa: F401

            profiler = under_torch
        except ImportError:
            print("pyprofile: torch is not importable here; cProfile instead", file=sys.stderr)
    name, code, top, full = profiler(lambda: start(kind, what))
    with open(raw, "w") as f:
        f.write(full + "\n")
    sys.stdout.flush()
    print(f"\n{BEGIN} {name}\n{top}\n{END}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
