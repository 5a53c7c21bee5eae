"""Predicted outputs: plain greedy decoding, transformers' speculation and our stacks, side by side.

Rows (each a process speaking the predicted-outputs stack protocol, all loaded at once): plain greedy decoding
with transformers `generate` (the reference), transformers' prompt lookup, transformers' assisted generation
with the target's draft model (when it has one), the seed at its defaults, and the predicted-output stack.
Each case goes to every row in turn (the order rotates per case), so the machine's noise falls on all rows.
The stacks (seed, predicted) run as a run runs them: a fresh copy each, confined (backends/sandbox.py).
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app import knobs, model
from app.bench.jsonbench import Row, Tuned, confined, import_workload, measure, say, scratch_folder, tuned_stack
from app.store import home
from app.target import load as load_target

TARGET = "predicted-outputs-tiny"
ROWS = ("plain", "lookup", "draft", "seed", "predicted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=TARGET, help=f"a predicted-outputs bundle (default {TARGET})")
    parser.add_argument("--inputs", type=Path, action="append", help="case folders (default: suite and hidden)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the cases (default 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default {','.join(ROWS)})")
    parser.add_argument("--lookup", type=int, default=10, help="prompt lookup: tokens drafted per step (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the transformers rows (default 2)")
    parser.add_argument("--draft", type=Path, help="draft model folder (default: the target's [model] draft)")
    parser.add_argument("--run", help="the predicted row: the best stack of this run (default: the latest run)")
    parser.add_argument("--stack", type=Path, help="the predicted row: a stack folder instead of a run")
    parser.add_argument("--out", type=Path, help="folder for report.md and results.json")


def main(args: argparse.Namespace) -> int:
    target = load_target(args.target)
    workload = import_workload(target.dir)
    if not hasattr(workload, "overlap"):
        raise ValueError(f"{target.name} is not a predicted-outputs target (its workload.py has no overlap())")
    models = home() / "models"
    model_dir = model.prepare(target.model, target.dir, "local", models)
    draft = args.draft or model.prepare_draft(target.model, target.dir, "local", models)
    out = args.out or home() / "bench" / f"predicted-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    folders = args.inputs or [target.dir / name for name in ("suite", *target.hidden)]
    cases = [case for folder in folders for case in workload.load_cases(folder, model_dir)]
    with scratch_folder() as scratch:
        stack = predicted_stack(args, target, scratch)
        rows = build_rows(args, target.dir, stack, model_dir, draft, scratch)
        say(f"{len(cases)} cases; rows: {', '.join(r.key for r in rows)}")
        answers = measure(workload, rows, cases, args.repeats)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    predictions = {c.name: tokenizer.encode(c.prediction, add_special_tokens=False) for c in cases}
    figures = [summarize(row, answers, cases, predictions, workload.overlap) for row in rows]
    command = " ".join(["atelier", "bench", "predicted", *sys.argv[3:]])
    text = write(out, figures, rows, cases, answers, predictions, workload.overlap, stack.describe, command)
    print(text)
    say(f"wrote {out / 'report.md'}, {out / 'results.json'}")
    return 0


def predicted_stack(args, target, scratch: Path) -> Tuned:
    """--stack, --run or the target's latest run; failing those, the seed with predicted = on."""
    found = tuned_stack(args, scratch, target.name)
    if found:
        return found
    folder = scratch / "seed-predicted"
    import shutil

    shutil.copytree(target.dir / target.seed, folder, ignore=shutil.ignore_patterns("__pycache__"))
    knobs.set_default(folder, "predicted", "on")
    return Tuned(folder, "the seed with predicted = on (no run given or found)", knobs.settings(folder))


def build_rows(args, bundle: Path, stack: Tuned, model_dir: Path, draft: Path | None, scratch: Path) -> list[Row]:
    keys = args.rows.split(",")
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise ValueError(f"unknown bench rows {unknown}: choose from {', '.join(ROWS)}")
    if "plain" not in keys:
        raise ValueError("the plain row is the reference every other row is compared with: keep it in --rows")
    python, root = sys.executable, Path(__file__).resolve().parents[2]
    hf = [python, "-m", "app.bench.hf_worker", "--bundle", str(bundle), "--model", str(model_dir),
          "--threads", str(args.threads)]  # fmt: skip
    settings = ", ".join(f"{k}={v}" for k, v in stack.settings.items())
    lookup = [*hf, "--lookup", str(args.lookup)]
    rows = {
        "plain": Row("plain", "transformers generate, greedy (the reference)", hf, root),
        "lookup": Row("lookup", f"transformers prompt lookup ({args.lookup} tokens)", lookup, root),
    }
    if draft:
        rows["draft"] = Row("draft", f"transformers assisted generation, draft {Path(draft).name}",
                            [*hf, "--draft", str(draft)], root)  # fmt: skip
    if "seed" in keys:
        rows["seed"] = confined("seed", "seed stack at its defaults", bundle / "seed", scratch, model_dir, draft)
    if "predicted" in keys:
        label = f"predicted-output stack: {stack.describe} ({settings})"
        rows["predicted"] = confined("predicted", label, stack.folder, scratch, model_dir, draft)
    return [rows[k] for k in keys if k in rows]


@dataclass
class Figures:
    key: str
    label: str
    median_s: float
    total_s: float
    speedup: float
    tokens_per_s: float
    identical: int
    answered: int
    accepted_share: float | None
    acceptance: float | None
    failures: list[str]


def summarize(row: Row, answers: dict, cases: list, predictions: dict, overlap) -> Figures:
    plain, mine = answers["plain"], answers[row.key]
    latency = {c.name: statistics.median(mine[c.name]["latency_s"]) for c in cases}
    plain_total = sum(statistics.median(plain[c.name]["latency_s"]) for c in cases)
    good = [c for c in cases if "error" not in mine[c.name]]
    tokens = sum(len(mine[c.name]["tokens"]) for c in good)
    identical = sum(same(mine[c.name], plain[c.name]) for c in good)
    stats = [mine[c.name]["stats"] for c in good if "stats" in mine[c.name]]
    accepted, drafted = sum(s["accepted"] for s in stats), sum(s["drafted"] for s in stats)
    failures = [f"{c.name}: {mine[c.name]['error']}" for c in cases if "error" in mine[c.name]]
    failures += [f"{c.name}: tokens differ from plain" for c in good if not same(mine[c.name], plain[c.name])]
    total = sum(latency.values())
    return Figures(row.key, row.label, statistics.median(latency.values()), total, plain_total / total,
                   tokens / sum(latency[c.name] for c in good) if good else 0.0, identical, len(cases),
                   accepted / tokens if stats and tokens else None, accepted / drafted if stats and drafted else None,
                   failures)  # fmt: skip


def same(answer: dict, reference: dict) -> bool:
    return "error" not in reference and answer.get("tokens") == reference["tokens"]


def write(out: Path, figures, rows, cases, answers, predictions, overlap, describe: str, command: str) -> str:
    plain = answers["plain"]
    shares = {c.name: overlap(plain[c.name].get("tokens", []), predictions[c.name]) for c in cases}
    tokens = {c.name: len(plain[c.name].get("tokens", [])) for c in cases}
    pooled = sum(shares[n] * tokens[n] for n in shares) / max(sum(tokens.values()), 1)
    percent = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    lines = [
        "# atelier bench predicted", "", f"`{command}`", "",
        f"{len(cases)} cases, {sum(tokens.values())} reference tokens; the prediction overlaps {pooled:.0%} of the "
        "reference output (difflib matching blocks of output and prediction tokens, pooled over the cases). "
        f"Predicted-output stack: {describe}.", "",
        "| row | what | median s | total s | speedup vs plain | tok/s | identical to plain | accepted share "
        "| acceptance |", "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for f in figures:
        lines.append(f"| {f.key} | {f.label} | {f.median_s:.2f} | {f.total_s:.2f} | {f.speedup:.2f}× | "
                     f"{f.tokens_per_s:.1f} | {f.identical}/{f.answered} | {percent(f.accepted_share)} | "
                     f"{percent(f.acceptance)} |")  # fmt: skip
    lines += ["", "speedup: plain's total time over the row's; accepted share: output tokens that were accepted "
              "predicted tokens; acceptance: accepted over verified predicted tokens.", "",
              "| case | tokens | overlap | " + " | ".join(f"{r.key} s" for r in rows) + " |",
              "|---|---|---|" + "---|" * len(rows)]  # fmt: skip
    for c in cases:
        times = " | ".join(f"{statistics.median(answers[r.key][c.name]['latency_s']):.2f}" for r in rows)
        lines.append(f"| {c.name} | {tokens[c.name]} | {shares[c.name]:.0%} | {times} |")
    failures = [f"- {f.key}: {failure}" for f in figures for failure in f.failures]
    lines += ["", "Failures:", *failures] if failures else []
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    results = {"command": command, "stack": describe, "overlap": shares, "pooled_overlap": pooled,
               "figures": [asdict(f) for f in figures], "answers": answers}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return text
