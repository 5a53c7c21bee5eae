"""Constrained JSON decoding: the generic paths users run today against our stacks, side by side.

Every row is a process speaking the json-tiny stack protocol, all loaded at once; requests go one at a
time, each case to every row in turn (the order rotates per case), so the machine's noise falls on all rows.
The stacks (seed, tuned) run as a run runs them: a fresh copy each, confined (backends/sandbox.py).
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app import knobs, model
from app.bench import report
from app.export import stack
from app.store import Store, home
from app.target import load as load_target
from backends.executor import Sandbox
from backends.sandbox import LAUNCH_VARIABLE, environment, launch_env, launcher

TARGET = "json-tiny"
OWN_SUITE = "schemas"


@dataclass
class Row:
    """A process speaking the stack protocol; env is the whole environment of a confined row (empty: this
    process's, unconfined)."""

    key: str
    label: str
    command: list[str]
    cwd: Path
    env: dict = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, help="a JSONSchemaBench checkout (data/<split>/*.json); default: own suite"
    )
    parser.add_argument("--per-split", type=int, default=4, help="schemas per JSONSchemaBench split (default 4)")
    parser.add_argument("--max-chars", type=int, default=1200, help="skip schemas longer than this (default 1200)")
    parser.add_argument("--max-tokens", type=int, default=128, help="output token limit per request (default 128)")
    parser.add_argument("--limit", type=int, help="use only the first N cases")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the cases (default 1)")
    parser.add_argument("--rows", default="a,b,b=,c,d,e", help="rows to run (default a,b,b=,c,d,e)")
    parser.add_argument("--run", help="row e: the best stack of this run (default: the latest json-tiny run)")
    parser.add_argument("--stack", type=Path, help="row e: an exported stack folder instead of a run")
    parser.add_argument("--out", type=Path, help="folder for report.md, results.json, chart.png")


def main(args: argparse.Namespace) -> int:
    target = load_target(TARGET)
    workload = import_workload(target.dir)
    model_dir = model.prepare(target.model, target.dir, target.executor, home() / "models")
    gguf = model.locate(target.model, target.dir)
    out = args.out or home() / "bench" / f"json-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    cases, skipped = load_workload(args, workload, target.dir, tokenizer)
    cases, uncompiled = compilable(cases, tokenizer, model_dir)
    with scratch_folder() as scratch:
        tuned = tuned_stack(args, scratch) if args.stack or "e" in args.rows.split(",") else None
        rows = build_rows(args.rows.split(","), target.dir / target.seed, tuned, model_dir, Path(str(gguf)), scratch)
        say(f"{len(cases)} cases, {len(uncompiled)} uncompilable, {len(skipped)} skipped; rows: "
            + ", ".join(r.key for r in rows))  # fmt: skip
        answers = measure(workload, rows, cases, args.repeats)
    results = report.Results(rows=[(r.key, r.label) for r in rows], cases=cases, answers=answers,
                             skipped=skipped, uncompiled=uncompiled, tuned=tuned.describe if tuned else "",
                             command=" ".join(["atelier", "bench", "json", *sys.argv[3:]]))  # fmt: skip
    text = report.write(results, out)
    if "c" in args.rows.split(",") and (why := llama_cpp_missing()):
        text += f"\nRow c (llama-cpp-python + JSON-schema grammar) skipped: {why}\n"
        (out / "report.md").write_text(text)
    print(text)
    say(f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'chart.png'}")
    return 0


def say(message: str) -> None:
    print(f"atelier bench: {message}", file=sys.stderr, flush=True)


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """Where the stacks' copies go: under $ATELIER_HOME, since a confined stack's /tmp is its own."""
    home().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=home()) as folder:
        yield Path(folder)


def import_workload(target_dir: Path):
    spec = importlib.util.spec_from_file_location("json_workload", target_dir / "workload.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_workload(args, workload, target_dir: Path, tokenizer) -> tuple[list, list]:
    if args.data:
        cases, skipped = workload.jsonschemabench(args.data, tokenizer, args.per_split, args.max_chars, args.max_tokens)
    else:
        cases, skipped = workload.load_cases(target_dir / OWN_SUITE), []
        for case in cases:
            case.max_tokens = args.max_tokens
    return cases[: args.limit] if args.limit else cases, skipped


def compilable(cases: list, tokenizer, model_dir: Path) -> tuple[list, list]:
    """The cases xgrammar compiles (compact JSON, as every constrained row uses), and the others with the reason."""
    import xgrammar as xgr

    config = json.loads((model_dir / "config.json").read_text())
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=config["vocab_size"])
    compiler = xgr.GrammarCompiler(info)
    good, bad = [], []
    for case in cases:
        try:
            compiler.compile_json_schema(json.dumps(case.grammar), any_whitespace=False, separators=(",", ":"))
            good.append(case)
        except Exception as error:  # noqa: BLE001 - xgrammar raises several types; each is reported
            bad.append((case.name, re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(error).strip())[:300]))
    return good, bad


@dataclass
class Tuned:
    folder: Path
    describe: str
    settings: dict


def tuned_stack(args, scratch: Path, target: str = TARGET) -> Tuned | None:
    """The stack args name: --stack DIR, else the best of --run RUN, else of the latest run of target."""
    if args.stack:
        folder = args.stack.resolve()
        return Tuned(folder, f"stack {folder}", knobs.settings(folder))
    store = Store()
    runs = [r for r in store.runs() if r.target == target and r.best_commit and r.best is not None]
    if args.run:
        runs = [store.run(args.run)]
    if not runs:
        return None
    run = max(runs, key=lambda r: r.started)
    folder = stack(run, scratch / "tuned")
    return Tuned(folder, f"run {run.id}", knobs.settings(folder))


def build_rows(
    keys: list[str], seed: Path, tuned: Tuned | None, model_dir: Path, gguf: Path, scratch: Path
) -> list[Row]:
    unknown = [k for k in keys if k not in ("a", "b", "b=", "c", "d", "e")]
    if unknown:
        raise ValueError(f"unknown bench rows {unknown}: choose from a, b, b=, c, d, e")
    python = sys.executable
    mlx_lm = [python, "-m", "app.bench.mlx_lm_worker", "--model", str(model_dir)]
    llama_cpp = [python, "-m", "app.bench.llama_cpp_worker", "--gguf", str(gguf), "--constrained"]
    root = Path(__file__).resolve().parents[2]
    rows = {
        "a": Row("a", "mlx-lm, unconstrained, schema in the prompt", mlx_lm, root),
        "b": Row("b", "mlx-lm + xgrammar logits processor", [*mlx_lm, "--constrained"], root),
        "c": Row("c", "llama-cpp-python + JSON-schema grammar (same GGUF, --no-repack)", llama_cpp, root),
    }
    if "c" in keys and (why := llama_cpp_missing()):
        del rows["c"]
        say(f"row c skipped: {why}")
    if "d" in keys:
        rows["d"] = confined("d", "seed stack at its defaults", seed, scratch, model_dir)
    if tuned:
        layout = {"weights": tuned.settings.get("weights", "quantized"), "blas": tuned.settings.get("blas", "bundled")}
        flags = ["--weights", layout["weights"], "--blas", layout["blas"]]
        label = f"mlx-lm + xgrammar, tuned layout (weights={layout['weights']}, blas={layout['blas']})"
        rows["b="] = Row("b=", label, [*mlx_lm, "--constrained", *flags], root)
        if "e" in keys:
            rows["e"] = confined("e", f"tuned stack ({tuned.describe})", tuned.folder, scratch, model_dir)
    return [rows[k] for k in keys if k in rows]


def llama_cpp_missing() -> str:
    """Why row c (llama-cpp-python, the bench extra) cannot run here, with the install command; empty when it can."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return ""
    root = Path(__file__).resolve().parents[2]
    return (
        f'llama-cpp-python is not installed: pip install -e ".[bench]" in {root} (here: {sys.executable} -m pip '
        f'install -e "{root}[bench]"; it compiles llama.cpp from source, minutes)'
    )


def confined(
    key: str, label: str, folder: Path, scratch: Path, model_dir: Path, draft: Path | None = None, network: bool = False
) -> Row:
    """A stack's row as a run starts it: serve.py in a fresh copy of its folder, through the launch prefix of a
    sandbox that shows it only that copy, the models and the toolchain (SandboxError without bubblewrap). network:
    it shares the network of whoever starts it (a confined harness's private one), as a run's candidate does."""
    copy = scratch / f"stack-{key}"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    prefix = launcher(Sandbox(copy, readable=(model_dir, draft) if draft else (model_dir,), network=network))
    env = environment() | {"PYTHONDONTWRITEBYTECODE": "1"} | launch_env(prefix)
    return Row(key, label, [sys.executable, str(copy / "serve.py"), "--model", str(model_dir)], copy, env)


def unconfined_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != LAUNCH_VARIABLE}
    return env | {"PYTHONDONTWRITEBYTECODE": "1"}


def measure(workload, rows: list[Row], cases: list, repeats: int) -> dict:
    """answers[row][case] = the first repeat's answer, with every repeat's round-trip time in latency_s."""
    stacks = {}
    answers: dict = {row.key: {} for row in rows}
    try:
        for row in rows:
            stacks[row.key] = workload.Stack(row.cwd, Path(), command=row.command, env=row.env or unconfined_env())
        for row in rows:
            started = time.perf_counter()
            stacks[row.key].wait_ready()
            stacks[row.key].ask(workload.WARMUP)
            say(f"row {row.key} ready in {time.perf_counter() - started:.1f} s: {row.label}")
        for repeat in range(repeats):
            for i, case in enumerate(cases):
                order = rows[i % len(rows) :] + rows[: i % len(rows)]
                for row in order:
                    answer = ask(stacks[row.key], case.request())
                    first = answers[row.key].setdefault(case.name, answer | {"latency_s": []})
                    first["latency_s"].append(answer["round_trip_s"])
                say(f"pass {repeat + 1}/{repeats}, case {i + 1}/{len(cases)} {case.name}: "
                    + ", ".join(f"{r.key} {answers[r.key][case.name]['round_trip_s']:.2f}s" for r in rows))  # fmt: skip
    finally:
        for stack in stacks.values():
            stack.close()
    return answers


def ask(stack, request: dict) -> dict:
    sent = time.perf_counter()
    try:
        answer = stack.ask(request)
    except Exception as error:  # noqa: BLE001 - a failed request is a result of its row, reported as such
        answer = {"id": request["id"], "error": str(error)[:500]}
    return answer | {"round_trip_s": time.perf_counter() - sent}
