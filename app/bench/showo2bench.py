"""Show-o2 tiny text to image: the PyTorch reference, the seed stack at its defaults and a tuned stack, side by side.

Every row is a process speaking the stack protocol, all loaded at once and warmed up with a short request; then each
repeat sends the case to every row in turn (the order rotates), so the machine's noise falls on all rows. The seed
and tuned stacks run as a run runs them: each a fresh copy under $ATELIER_HOME, confined by bubblewrap (the copy
writable, the model read-only, nothing else of this machine's files, no credentials), writing its image inside the
copy. Each row's
image is compared to the reference row's with the target's checker metrics. The physics floor (the target's
floor.py) uses this machine's best measured fp32 matmul throughput (MLX with its bundled BLAS or the system
OpenBLAS, or torch) and copy bandwidth, printed beside the table so that algorithmic gains read apart from framework
speed.
"""

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from app import knobs, model
from app.export import export
from app.store import Store, home
from app.target import load as load_target
from backends.executor import Sandbox
from backends.sandbox import launcher

TARGET = "showo2-tiny"
WARMUP_STEPS = 2
COMPONENTS = ("body_s", "head_s", "vae_s")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Row:
    key: str
    label: str
    folder: Path
    settings: dict
    command: list[str] | None = None
    prefix: list[str] | None = None
    latencies: list[float] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)
    error: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="row c: the best stack of this run (default: the latest showo2-tiny run)")
    parser.add_argument("--stack", type=Path, help="row c: a stack folder (an export, a workspace) instead of a run")
    parser.add_argument("--rows", default="a,b,c", help="rows to run: a reference, b seed, c tuned (default a,b,c)")
    parser.add_argument("--repeats", type=int, default=3, help="timed requests per row (default 3)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the case's, 20)")
    parser.add_argument("--out", type=Path, help="folder for report.md, results.json and the images")


def main(args: argparse.Namespace) -> int:
    target = load_target(TARGET)
    bundle = import_bundle(target.dir)
    model_dir = model.prepare(target.model, target.dir, target.executor, home() / "models")
    case = bundle.stack.load_cases(target.dir / "suite")[0]
    steps = args.steps or case.steps
    out = args.out or home() / "bench" / f"showo2-{time.strftime('%Y%m%d-%H%M%S')}"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (home() / "bench").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".stacks-", dir=home() / "bench") as scratch:
        rows = build_rows(args, target.dir, model_dir, Path(scratch))
        say("measuring this machine: fp32 matmul 1024^3 (MLX bundled BLAS, MLX OpenBLAS, torch) and copy bandwidth")
        machine = measure_machine(bundle.floor)
        say("rows: " + "; ".join(f"{r.key} {r.label}" for r in rows))
        measure(bundle.stack, rows, case, steps, args.repeats, model_dir, out / "images")
    config = bundle.floor.Config.load(model_dir)
    results = figures(bundle, rows, config, steps, machine, out / "images")
    command = " ".join(["atelier", "bench", "showo2", *sys.argv[3:]])
    text = report(results, machine, case, steps, args.repeats, command)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"command": command, "case": vars(case), "steps": steps,
                                                  "machine": machine, "rows": results}, indent=1))  # fmt: skip
    print(text)
    say(f"wrote {out / 'report.md'}, {out / 'results.json'} and {out / 'images'}")
    return 0 if all(not r["error"] for r in results) else 1


def say(message: str) -> None:
    print(f"atelier bench: {message}", file=sys.stderr, flush=True)


def import_bundle(target_dir: Path):
    """The target's stack client, checker metrics and floor modules (they import its reference package)."""
    sys.path.insert(0, str(target_dir))
    names = ("stack", "metrics", "floor")
    return argparse.Namespace(**{name: importlib.import_module(name) for name in names})


def measure_machine(floor) -> dict:
    found = {"mlx_bundled": floor.measure("mlx", "bundled"), "mlx_openblas": floor.measure("mlx", "openblas"),
             "torch": floor.measure("torch")}  # fmt: skip
    best = max(found.values(), key=lambda m: m["matmul_gflops"])
    return found | {
        "best_gflops": best["matmul_gflops"],
        "bandwidth_gbs": max(m["bandwidth_gbs"] for m in found.values()),
    }


def build_rows(args, target_dir: Path, model_dir: Path, scratch: Path) -> list[Row]:
    keys = args.rows.split(",")
    unknown = [k for k in keys if k not in ("a", "b", "c")]
    if unknown:
        raise ValueError(f"unknown bench rows {unknown}: choose from a, b, c")
    worker = [
        sys.executable,
        "-m",
        "app.bench.showo2_reference",
        "--target",
        str(target_dir),
        "--model",
        str(model_dir),
    ]
    rows = {"a": Row("a", "PyTorch reference (warm, CPU)", ROOT, {}, worker)}
    if "b" in keys:
        seed = target_dir / "seed"
        rows["b"] = confined("b", "seed stack at its defaults (plain MLX port)", seed, model_dir, scratch)
    if "c" in keys:
        folder, describe = tuned_stack(args, scratch)
        rows["c"] = confined("c", f"tuned stack ({describe})", folder, model_dir, scratch)
    return [rows[k] for k in keys]


def confined(key: str, label: str, folder: Path, model_dir: Path, scratch: Path) -> Row:
    """A row running a fresh copy of the stack folder in the sandbox a run gives candidates."""
    copy = scratch / key
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    prefix = launcher(Sandbox(copy, readable=(model_dir,)))
    return Row(key, label, copy, knobs.settings(copy), prefix=prefix)


def tuned_stack(args, scratch: Path) -> tuple[Path, str]:
    if args.stack:
        folder = args.stack.resolve()
        if not (folder / "serve.py").is_file():
            raise ValueError(f"--stack {folder}: no serve.py there")
        return folder, f"stack {folder}"
    store = Store()
    runs = [store.run(args.run)] if args.run else [r for r in store.runs() if r.target == TARGET and r.best_commit]
    if not runs:
        raise ValueError(f"row c: no {TARGET} run with a best stack in {home()}: pass --run, --stack or --rows a,b")
    run = max(runs, key=lambda r: r.started)
    return export(store, run.id, scratch / "export"), f"run {run.id}, best {run.best_commit and run.best_commit[:10]}"


def measure(stack, rows: list[Row], case, steps: int, repeats: int, model_dir: Path, images: Path) -> None:
    clients = {}
    try:
        for row in rows:
            clients[row.key] = stack.Stack(row.folder, model_dir, command=row.command, prefix=row.prefix or [])
        for row in rows:
            started = time.perf_counter()
            try:
                clients[row.key].wait_ready()
                warmup = write_to(stack, row, images / f".warmup-{row.key}.png")
                clients[row.key].ask(case.request(warmup, steps=WARMUP_STEPS))
                warmup.unlink(missing_ok=True)
            except stack.StackError as error:
                row.error = f"did not start: {error}"
            say(
                f"row {row.key} ready in {time.perf_counter() - started:.1f} s"
                + (f": {row.error}" if row.error else "")
            )
        for repeat in range(repeats):
            live = [r for r in rows if not r.error]
            for row in live[repeat % max(len(live), 1) :] + live[: repeat % max(len(live), 1)]:
                ask(stack, clients[row.key], row, case, steps, images)
            say(
                f"repeat {repeat + 1}/{repeats}: "
                + ", ".join(f"{r.key} {r.latencies[-1]:.2f}s" for r in live if r.latencies)
            )
    finally:
        for client in clients.values():
            client.close()


def write_to(stack, row: Row, path: Path) -> Path:
    """Where the row writes an image: path for the reference, a fresh name inside a stack's own folder."""
    return path if row.command else stack.out_path(row.folder, path.stem)


def ask(stack, client, row: Row, case, steps: int, images: Path) -> None:
    out = write_to(stack, row, images / f"{row.key}.png")
    sent = time.perf_counter()
    try:
        answer = client.ask(case.request(out, steps=steps))
        latency = time.perf_counter() - sent
        if out.parent != images:
            (images / f"{row.key}.png").write_bytes(stack.read_back(out, row.folder))
            out.unlink()
    except stack.StackError as error:
        row.error = stack.one_line(error)[:500]
        return
    row.latencies.append(latency)
    row.timings.append(answer.get("timings", {}))


def figures(bundle, rows: list[Row], config, steps: int, machine: dict, images: Path) -> list[dict]:
    reference = next((r for r in rows if r.key == "a" and r.latencies), None)
    expected = np.asarray(Image.open(images / "a.png").convert("RGB")) if reference else None
    thresholds = bundle.stack.load_thresholds(Path(bundle.stack.__file__).with_name("thresholds.toml"))
    out = []
    for row in rows:
        values: dict = {"key": row.key, "label": row.label, "settings": row.settings, "error": row.error,
                        "latencies": row.latencies}  # fmt: skip
        if row.latencies:
            values |= {"min_s": min(row.latencies), "median_s": statistics.median(row.latencies)}
            values |= {n: statistics.median(t[n] for t in row.timings) for n in COMPONENTS if row.timings[0].get(n)}
            phases = bundle.floor.count(config, bundle.floor.Plan.ideal(row.settings, steps))
            floor = bundle.floor.floor(phases, machine["best_gflops"], machine["bandwidth_gbs"])
            values |= {"floor_s": floor.seconds, "floor_ratio": values["median_s"] / floor.seconds,
                       "gflop": floor.flops / 1e9, "image": str(images / f"{row.key}.png")}  # fmt: skip
            if reference:
                values["speedup"] = statistics.median(reference.latencies) / values["median_s"]
        if expected is not None and row.latencies:
            image = np.asarray(Image.open(images / f"{row.key}.png").convert("RGB"))
            failures, _ = bundle.metrics.judge(image, expected, thresholds)
            m = bundle.metrics
            values |= {"mae": m.mae(image, expected), "psnr": m.psnr(image, expected), "ssim": m.ssim(image, expected),
                       "checker": "; ".join(failures) or "pass"}  # fmt: skip
        out.append(values)
    return out


def cell(values: dict, name: str, form: str) -> str:
    value = values.get(name)
    return "–" if value is None else "inf" if value == float("inf") else format(value, form)


def report(results: list[dict], machine: dict, case, steps: int, repeats: int, command: str) -> str:
    head = ["row", "stack", "min s", "median s", "body s", "head s", "VAE s", "a ÷ row", "MAE", "PSNR dB", "SSIM",
            "checker", "floor s", "row ÷ floor"]  # fmt: skip
    lines = [f"# atelier bench showo2\n\n`{command}`\n",
             f"Case {case.name!r}: {case.prompt!r}, seed {case.seed}, {steps} steps, guidance {case.guidance}; "
             f"{repeats} timed requests per row, interleaved, after one {WARMUP_STEPS}-step warm-up each. Latency is "
             "the request's round trip; body/head/VAE are the stack's own medians. MAE, PSNR and SSIM compare each "
             "row's image to row a's with the target's checker thresholds.\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for r in results:
        cells = [r["key"], r["label"], cell(r, "min_s", ".2f"), cell(r, "median_s", ".2f"), cell(r, "body_s", ".2f"),
                 cell(r, "head_s", ".2f"), cell(r, "vae_s", ".3f"), cell(r, "speedup", ".2f") + "×",
                 cell(r, "mae", ".3f"), cell(r, "psnr", ".2f"), cell(r, "ssim", ".4f"), r.get("checker", "–"),
                 cell(r, "floor_s", ".3f"), cell(r, "floor_ratio", ".1f") + "×"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        if r["error"]:
            lines.append(f"- row {r['key']} failed: {r['error']}")
        if r["settings"]:
            lines.append(f"- row {r['key']} knobs: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()))
    g = {k: machine[k]["matmul_gflops"] for k in ("mlx_bundled", "mlx_openblas", "torch")}
    lines += ["", "## This machine\n",
              f"fp32 matmul 1024³: MLX with its bundled BLAS {g['mlx_bundled']:.1f} GFLOP/s, MLX with the system "
              f"OpenBLAS {g['mlx_openblas']:.1f} GFLOP/s, torch {g['torch']:.1f} GFLOP/s; copy bandwidth "
              f"{machine['bandwidth_gbs']:.1f} GB/s. The floor is the ideal algorithm (prefix caches, trimmed "
              "sequence, SigLIP once per step) at each row's lossy knobs (CFG stride, SigLIP reuse, weight bits), "
              f"each phase at max(FLOPs / {machine['best_gflops']:.1f} GFLOP/s, bytes / "
              f"{machine['bandwidth_gbs']:.1f} GB/s): see targets/showo2-tiny/floor.py.", ""]  # fmt: skip
    return "\n".join(lines)
