"""Serving under load: a run's best stack as its export serves it, the seed, and mlx_lm.server, side by side.

`atelier bench serve RUN --clients C --requests N` sends N chat completions with real schemas (the target's own
suite, or --data DIR, a JSONSchemaBench checkout, read by the JSON bench's loader) to each row's OpenAI server in
turn, the same request sequence for every row, with the real `openai` client (a timeout per request, no retries):
closed loop (C clients, each sending its next request when its last one was answered) or, with --rate R, open
loop (Poisson arrivals at R requests/s from a seeded RNG). Rows: (e) the run's best stack, server started through
the serve template of the target's target.toml from a fresh copy of the best commit, (s) the run's seed at its
defaults the same way when the best differs from it, (m) `python -m mlx_lm server` on the same model, which has
no response_format: its outputs are validated all the same. The stacks run confined exactly as a run runs them:
the load generator (app/bench/load.py) is the harness, in a sandbox with a private network, and each stack is
started through the launch prefix of its own nested sandbox, which shares that network and nothing else.
"""

import argparse
import json
import random
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

from app import export, model
from app.bench import report
from app.bench.jsonbench import confined, import_workload, load_workload, say, scratch_folder, tuned_stack
from app.store import Store, home
from app.target import load as load_target
from app.workspace import Workspace
from backends.executor import Sandbox
from backends.mlx.executor import LocalExecutor
from backends.sandbox import LAUNCH_VARIABLE

TARGET = "json-tiny"
ROWS = ("e", "s", "m")
ERRORS = ("server_error", "dropped", "timeout", "bad_response")
NOT_A_SERVER = (
    "x (plain mlx-lm + xgrammar) is not a server: app/bench/mlx_lm_worker.py answers JSON lines one request at a "
    "time, so it has no place under concurrent HTTP clients; `atelier bench json` row b measures it one request at "
    "a time."
)
MLX_LM_SERVER = (
    "m (mlx_lm.server) is not agent-written code: it runs in the harness's sandbox without a nested one, with "
    "HF_HOME at an empty folder holding hub/ (offline, its /v1/models fails without one); it is sent no "
    "response_format, since it has none."
)
WARMUP_MESSAGES = [{"role": "system", "content": "Reply with JSON only."}, {"role": "user", "content": "Is water wet?"}]
WARMUP_SCHEMA = {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", help="the run whose best stack is served (default: the latest run "
                        "of --target with an accepted best)")  # fmt: skip
    parser.add_argument("--stack", type=Path, help="row e: a stack folder (an export) instead of a run's best")
    parser.add_argument("--target", default=TARGET, help=f"with --stack or no run: the target (default {TARGET})")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients, closed loop (default 4)")
    parser.add_argument("--requests", type=int, default=40, help="requests per row (default 40)")
    parser.add_argument("--rate", type=float, help="open loop instead: Poisson arrivals at this many requests/s")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed of request order and arrivals (default 0)")
    parser.add_argument("--stream", action="store_true", help="stream the answers (and measure time to first token)")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens per request (default 128)")
    parser.add_argument("--timeout", type=float, default=600.0, help="client timeout per request, s (default 600)")
    parser.add_argument("--data", type=Path, help="a JSONSchemaBench checkout (data/<split>/*.json); default: "
                        "the target's own schema suite")  # fmt: skip
    parser.add_argument("--per-split", type=int, default=4, help="schemas per JSONSchemaBench split (default 4)")
    parser.add_argument("--max-chars", type=int, default=1200, help="skip schemas longer than this (default 1200)")
    parser.add_argument("--limit", type=int, help="use only the first N schemas")
    parser.add_argument("--raw-schemas", action="store_true", help="send the schemas as they are, not bounded as "
                        "the JSON bench decodes them (free strings capped; see workload.bounded)")  # fmt: skip
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default {','.join(ROWS)})")
    parser.add_argument("--row-requests", default="", metavar="KEY=N,…", help="fewer requests for slow rows: "
                        "the first N of the same sequence (e.g. m=8)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder for report.md and results.json")


@dataclass
class Server:
    """A row as the load generator starts it: argv run in cwd; ready is "line" ({"ready": true, "port": N} on
    stdout) or "health" (GET /health on the {port} the load generator puts in argv)."""

    key: str
    label: str
    argv: list[str]
    cwd: str
    ready: str
    model: str
    response_format: bool
    env: dict = field(default_factory=dict)


def main(args: argparse.Namespace) -> int:
    keys = args.rows.split(",")
    if unknown := [k for k in keys if k not in ROWS]:
        raise ValueError(f"unknown bench rows {unknown}: choose from {', '.join(ROWS)}")
    if args.clients < 1 or args.requests < 1 or (args.rate is not None and args.rate <= 0):
        raise ValueError("--clients, --requests and --rate must be positive")
    store = Store()
    run = None if args.stack else pick_run(store, args)
    serving = how_served(store, run, args.target)
    target = serving.target
    if not target.serve:
        raise ValueError(f"target {target.name} has no server (no serve template in its target.toml)")
    workload = import_workload(target.dir)
    if not hasattr(workload, "jsonschemabench"):
        raise ValueError(f"target {target.name} is not a JSON-schema target (its workload has no schema loader)")
    cases, skipped = schemas(args, workload, target.dir, serving.model)
    requests = sequence(cases, args)
    out = args.out or home() / "bench" / f"serve-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["atelier", "bench", "serve", *sys.argv[3:]])
    with scratch_folder() as scratch:
        tuned = tuned_stack(SimpleNamespace(stack=args.stack, run=run.id if run else None), scratch, target.name)
        assert tuned is not None
        seed, notes = seed_folder(run, target, scratch)
        servers = rows(keys, serving, tuned, seed, scratch)
        notes.append(NOT_A_SERVER)
        if "m" in keys:
            notes.append(MLX_LM_SERVER)
        say(f"{len(requests)} requests over {len(cases)} schemas, {len(skipped)} skipped; rows: "
            + ", ".join(s.key for s in servers))  # fmt: skip
        measured = drive(servers, requests, args, scratch, serving)
    by_case = {c.name: c for c in cases}
    figures = [summarize(s, measured["rows"][s.key], by_case, args) for s in servers]
    text = write(out, figures, servers, requests, cases, skipped, notes, measured, args, command, tuned.describe)
    print(text)
    say(f"wrote {out / 'report.md'}, {out / 'results.json'}")
    return 0


def pick_run(store: Store, args):
    if args.run:
        run = store.run(args.run)
    else:
        runs = [r for r in store.runs() if r.target == args.target and r.best_commit and r.best is not None]
        if not runs:
            raise ValueError(f"no {args.target} run with an accepted best: name a RUN or --stack DIR")
        run = max(runs, key=lambda r: r.started)
    if not run.best_commit:
        raise ValueError(f"run {run.id} has no best commit yet")
    return run


def how_served(store: Store, run, target_name: str) -> export.Best:
    """The target, prepared model and draft and their names in a stack folder (model/<name>), as the export has
    them: the run's (app/export.py best), or for --stack the named target's."""
    if run is not None:
        return export.best(store, run.id)
    target = load_target(target_name)
    models = home() / "models"
    model_dir = model.prepare(target.model, target.dir, target.executor, models)
    draft = model.prepare_draft(target.model, target.dir, target.executor, models)
    names = export.model_names(target.model, model_dir, draft)
    return export.Best(None, target, model_dir, draft, *names)  # type: ignore[arg-type]


def schemas(args, workload, target_dir: Path, model_dir: Path) -> tuple[list, list]:
    """The JSON bench's cases (same loader, same options); the tokenizer renders --data prompts only."""
    tokenizer = None
    if args.data:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    cases, skipped = load_workload(args, workload, target_dir, tokenizer)
    usable = [c for c in cases if c.messages]
    skipped += [SimpleNamespace(name=c.name, reason="no chat messages (prompt only)") for c in cases if not c.messages]
    if not usable:
        raise ValueError("no schemas to send")
    return usable, skipped


def sequence(cases: list, args) -> list[dict]:
    """The requests every row gets: the schemas in a seeded random order, cycled to --requests; with --rate,
    each one's arrival time (seconds from the start) from the same RNG."""
    rng = random.Random(args.seed)
    order = cases[:]
    rng.shuffle(order)
    requests, at = [], 0.0
    for i in range(args.requests):
        case = order[i % len(order)]
        schema = case.schema if args.raw_schemas else case.grammar
        request = {"id": f"{i:04d}", "case": case.name, "messages": case.messages, "schema": schema,
                   "max_tokens": args.max_tokens}  # fmt: skip
        if args.rate:
            at += rng.expovariate(args.rate)
            request["at"] = at
        requests.append(request)
    return requests


def seed_folder(run, target, scratch: Path) -> tuple[Path | None, list[str]]:
    """The seed as the run started it (its root commit), or the bundle's seed for --stack; None when the run's
    best is the seed itself."""
    if run is None:
        return target.dir / target.seed, []
    workspace = Workspace(run.path / "workspace", run.branch)
    root = workspace.root
    assert run.best_commit is not None
    if workspace.tree_of(root) == workspace.tree_of(run.best_commit):
        return None, ["s (the seed) not run: the run's best is its seed."]
    folder = scratch / "seed"
    workspace.export(root, folder)
    (folder / ".gitignore").unlink(missing_ok=True)
    return folder, []


def rows(keys, serving: export.Best, tuned, seed: Path | None, scratch: Path) -> list[Server]:
    settings = ", ".join(f"{k}={v}" for k, v in tuned.settings.items())
    found = {}
    if "e" in keys:
        found["e"] = stack("e", f"best stack, {tuned.describe} ({settings})", tuned.folder, serving, scratch)
    if "s" in keys and seed is not None:
        found["s"] = stack("s", "seed stack at its defaults", seed, serving, scratch)
    if "m" in keys:
        hf = scratch / "hf"
        (hf / "hub").mkdir(parents=True, exist_ok=True)  # mlx_lm.server's /v1/models fails offline without it
        argv = [sys.executable, "-m", "mlx_lm", "server", "--model", str(serving.model), "--host", "127.0.0.1",
                "--port", "{port}", "--log-level", "WARNING"]  # fmt: skip
        label = (f"mlx_lm.server (mlx-lm {version('mlx-lm')}), the same model as converted, MLX's own BLAS; no "
                 "response_format: the schema is in the prompt only")  # fmt: skip
        found["m"] = Server("m", label, argv, str(scratch), "health", "default_model", False,
                            {"HF_HOME": str(hf), "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return [found[k] for k in keys if k in found]


def stack(key: str, label: str, folder: Path, serving: export.Best, scratch: Path) -> Server:
    """A stack's server as its export runs it (the target's serve line, Target.serve_line, the model at
    model/<name>, then --port 0), in a fresh copy, confined as the other benches confine stacks
    (jsonbench.confined), sharing the harness's private network."""
    row = confined(key, label, folder, scratch, serving.model, serving.draft, network=True)
    for source, name in ((serving.model, serving.model_name), (serving.draft, serving.draft_name)):
        if source and name and not (row.cwd / export.MODELS / name).exists():
            (row.cwd / export.MODELS).mkdir(exist_ok=True)
            (row.cwd / export.MODELS / name).symlink_to(Path(source).resolve())
    model, draft = export.inside(serving.model_name), export.inside(serving.draft_name)
    assert model is not None
    line = serving.target.serve_line(shlex.quote(sys.executable), model, draft)
    prefix = json.loads(row.env[LAUNCH_VARIABLE])
    return Server(key, label, [*prefix, *shlex.split(line), "--port", "0"], str(row.cwd), "line",
                  serving.model_name, True)  # fmt: skip


def drive(servers: list[Server], requests: list[dict], args, scratch: Path, serving: export.Best) -> dict:
    """The load generator as a harness: confined with the whole file system read-only but the scratch folder,
    and a private network that the rows' servers share."""
    fewer = {key: int(n) for key, _, n in (item.partition("=") for item in args.row_requests.split(",") if item)}
    rows = [asdict(s) | {"requests": min(fewer.get(s.key, len(requests)), len(requests))} for s in servers]
    plan = {"rows": rows, "requests": requests, "clients": args.clients, "rate": args.rate,
            "stream": args.stream, "timeout": args.timeout, "ready_timeout": 600.0,
            "warmup": {"id": "warmup", "case": "warmup", "messages": WARMUP_MESSAGES, "schema": WARMUP_SCHEMA,
                       "max_tokens": 8}}  # fmt: skip
    (scratch / "plan.json").write_text(json.dumps(plan))
    root = Path(__file__).resolve().parents[2]
    readable = tuple(Path(p).resolve() for p in (serving.model, serving.draft, root) if p)
    harness = Sandbox(scratch, readable=readable, whole=True)
    command = [sys.executable, "-m", "app.bench.load", str(scratch / "plan.json"), str(scratch / "measured.json")]
    budget = len(servers) * (plan["ready_timeout"] + (len(requests) + 1) * args.timeout)
    env = {"PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    result = LocalExecutor().run(command, cwd=scratch, timeout=budget, env=env, sandbox=harness,
                                 on_line=lambda line: say(line))  # fmt: skip
    measured = scratch / "measured.json"
    if not result.ok or not measured.exists():
        raise RuntimeError(f"the load generator failed (exit {result.exit_code}): {result.tail(30)}")
    return json.loads(measured.read_text())


@dataclass
class Figures:
    key: str
    label: str
    requests: int
    ok: int
    invalid: int
    cut: int
    refused: int
    server_error: int
    dropped: int
    timeout: int
    bad_response: int
    p50_s: float
    p99_s: float
    ttft_p50_s: float | None
    completion_tokens: int | None
    tokens_per_s: float | None
    answered_per_s: float
    wall_s: float
    ready_s: float | None
    refusals: dict[str, int]
    problems: list[str]
    log_tail: str

    @property
    def errors(self) -> int:
        return self.server_error + self.dropped + self.timeout + self.bad_response


def summarize(server: Server, measured: dict, cases: dict, args) -> Figures:
    """One row's counts and figures. ok: finished (finish_reason stop) and schema-valid against the schema itself;
    invalid: finished but not; cut: finish_reason length. Latency percentiles are over answered requests."""
    outcomes = measured["outcomes"]
    counts = dict.fromkeys(("ok", "invalid", "cut", "refused", *ERRORS), 0)
    refusals: dict[str, int] = {}
    problems, latencies, ttfts, tokens, missing_usage = [], [], [], 0, 0
    for o in outcomes:
        if o["kind"] != "answered":
            counts[o["kind"]] += 1
            if o["kind"] == "refused":
                name = message_class(o["status"], o["message"])
                refusals[name] = refusals.get(name, 0) + 1
            else:
                problems.append(f"{o['id']} {o['case']}: {o['kind']}: {o.get('message', '')}")
            continue
        latencies.append(o["latency_s"])
        if o.get("ttft_s") is not None:
            ttfts.append(o["ttft_s"])
        if o.get("usage") and o["usage"].get("completion_tokens") is not None:
            tokens += o["usage"]["completion_tokens"]
        else:
            missing_usage += 1
        if o.get("finish_reason") == "length":
            counts["cut"] += 1
            continue
        case = cases[o["case"]]
        reason = report.problem(SimpleNamespace(schema=case.schema, max_tokens=args.max_tokens),
                                {"text": o.get("content") or "", "finish_reason": o.get("finish_reason")})  # fmt: skip
        counts["invalid" if reason else "ok"] += 1
        if reason:
            problems.append(f"{o['id']} {o['case']}: {reason}")
    wall = measured["wall_s"] or 0.0
    answered = len(latencies)
    if missing_usage and answered:
        problems.insert(0, f"{missing_usage} of {answered} answers carried no usage: tokens/s not reported")
    return Figures(
        server.key, server.label, len(outcomes), counts["ok"], counts["invalid"], counts["cut"], counts["refused"],
        counts["server_error"], counts["dropped"], counts["timeout"], counts["bad_response"],
        report.percentile(latencies, 0.5), report.percentile(latencies, 0.99),
        report.percentile(ttfts, 0.5) if ttfts else None, None if missing_usage else tokens,
        tokens / wall if wall and answered and not missing_usage else None, answered / wall if wall else 0.0,
        wall, measured["ready_s"], refusals, problems,
        measured.get("log_tail", "") if measured.get("start_error") or measured.get("exit_code") is not None else "",
    )  # fmt: skip


def message_class(status: int, message: str) -> str:
    """A refusal's class: status and message with its particulars (numbers, quoted text) blanked."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "…", message)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return f"{status}: {' '.join(text.split())[:120]}"


def table(figures: list[Figures], stream: bool) -> str:
    base = next((f for f in figures if f.key == "e"), None)
    head = ["row", "server", "requests", "ok", "invalid", "cut", "refused", "errors (5xx/drop/timeout/other)",
            "p50 s", "p99 s", *(["TTFT p50 s"] if stream else []), "tok/s", "answered/s", "wall s",
            "wall ÷ e"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in figures:
        errors = f"{f.errors} ({f.server_error}/{f.dropped}/{f.timeout}/{f.bad_response})"
        cells = [f.key, f.label, str(f.requests), str(f.ok), str(f.invalid), str(f.cut), str(f.refused), errors,
                 number(f.p50_s), number(f.p99_s), *([number(f.ttft_p50_s)] if stream else []),
                 number(f.tokens_per_s, 1), number(f.answered_per_s, 3), number(f.wall_s, 1),
                 f"{f.wall_s / base.wall_s:.2f}×" if base and base.wall_s and f.wall_s and
                 f.requests == base.requests else "–"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def write(out: Path, figures, servers, requests, cases, skipped, notes, measured, args, command, describe) -> str:
    load = (f"open loop, Poisson arrivals at {args.rate:g} requests/s (seed {args.seed})" if args.rate
            else f"closed loop, {args.clients} clients")  # fmt: skip
    source = f"JSONSchemaBench checkout {args.data}" if args.data else "the target's own schema suite"
    grammar = "as they are" if args.raw_schemas else "bounded as `atelier bench json` decodes them"
    lines = [
        "# atelier bench serve", "", f"`{command}`", "",
        f"{load}; {len(requests)} requests per row over {len(cases)} schemas from {source} (seeded order, seed "
        f"{args.seed}), the same sequence for every row, one row after another; "
        f"{'streamed' if args.stream else 'not streamed'}; max_tokens {args.max_tokens}; client timeout "
        f"{args.timeout:g} s, no retries; schemas sent {grammar}, answers validated against the schema itself. "
        f"Row e: {describe}.", "",
        table(figures, args.stream), "",
        "ok: finish_reason stop and schema-valid JSON; invalid: finished but not; cut: finish_reason length (the "
        "JSON so far); refused: 4xx; errors: 5xx / dropped connections (and streams that ended without a "
        "finish_reason) / client timeouts / answers the client could not read. Latency is per answered request "
        "(from its send, or its due time in open loop); tok/s is completion tokens from `usage` over the row's wall "
        "time; answered/s is requests answered (ok, invalid or cut) over it; wall ÷ e only between rows given as many "
        "requests.", "",
    ]  # fmt: skip
    lines += [f"- {note}" for note in notes] + [""]
    for f in figures:
        if f.refusals or f.problems or f.log_tail:
            lines.append(f"## Row {f.key}\n")
            lines += [f"- refused ×{n}: {name}" for name, n in sorted(f.refusals.items(), key=lambda i: -i[1])]
            lines += [f"- {p}" for p in f.problems[:40]]
            lines += [f"- … and {len(f.problems) - 40} more"] if len(f.problems) > 40 else []
            lines += ["", "Server log (tail):", "", "```", f.log_tail[-2000:], "```"] if f.log_tail else []
            lines.append("")
    if skipped:
        lines.append(f"## {len(skipped)} schemas skipped\n")
        lines += [f"- {s.name}: {s.reason}" for s in skipped] + [""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    results = {"command": command, "load": load, "stream": args.stream, "max_tokens": args.max_tokens,
               "stack": describe, "notes": notes, "rows": [asdict(f) | {"errors": f.errors} for f in figures],
               "servers": [{"key": s.key, "label": s.label, "argv": s.argv} for s in servers],
               "requests": [{k: r[k] for k in ("id", "case", "at") if k in r} for r in requests],
               "measured": measured, "skipped": [vars(s) for s in skipped]}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return text
