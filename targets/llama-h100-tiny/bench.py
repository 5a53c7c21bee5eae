"""Serve the candidate under open-loop Poisson load and report output token throughput, TTFT and TPOT.

python bench.py --stack WORKSPACE --model MODEL --inputs PROMPTS_DIR [--rates 8,32,64,128] [--duration 60]
                [--seed 42] [--max-tokens 128] [--drain 600] [--vllm auto|off]
Starts the stack's server on a free port, sends one untimed warm-up request per prompt, then for each rate sends
requests at Poisson arrival times (seeded) for --duration seconds, every one streamed with temperature 0 and
ignore_eos, so each yields --max-tokens tokens. Requests still running --drain seconds after the last was sent
are closed (the server should drop them) and counted as unfinished; their tokens so far count.
Prints METRIC output_tokens_per_s (all rates' output tokens over their summed wall times, each from its first
request sent to its last token), and per rate R output_tokens_per_s_at_R, ttft_ms_at_R, tpot_ms_at_R and
unfinished_at_R. With --vllm auto and vLLM importable here, `vllm serve` gets the same load and its numbers are
printed as vllm_* METRIC lines (measured once per model, load and vLLM version, then reused from
--vllm-cache); without vLLM it says so.
"""

import argparse
import hashlib
import importlib.util
import json
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import drive, schedule, summarize  # noqa: E402
from stack import Server, StackError, free_port, post, stack_server  # noqa: E402

VLLM_CACHE = Path("~/.cache/atelier/llama-bench-vllm").expanduser()


def main() -> int:
    args = parse_args()
    prompts = [case["messages"] for case in json.loads((args.inputs / "prompts.json").read_text())]
    port = free_port()
    try:
        with stack_server(args.stack, args.model, port) as server:
            startup = server.wait_ready()
            rows = measure(port, args, prompts)
    except StackError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    report("", rows)
    print(f"METRIC startup_s {startup:.3f}")
    if args.vllm == "auto":
        baseline(args, prompts)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="llama serving benchmark")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", required=True, type=Path, help="folder with prompts.json")
    parser.add_argument("--rates", default="8,32,64,128", help="requests per second, comma-separated")
    parser.add_argument("--duration", default=60.0, type=float, help="seconds of arrivals per rate")
    parser.add_argument("--seed", default=42, type=int)
    parser.add_argument("--max-tokens", default=128, type=int)
    parser.add_argument(
        "--drain",
        default=600.0,
        type=float,
        help="seconds to wait for answers after the last send; then the unfinished are closed and counted",
    )
    parser.add_argument("--vllm", default="auto", choices=["auto", "off"])
    parser.add_argument("--vllm-cache", default=VLLM_CACHE, type=Path)
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    return args


def measure(port: int, args: argparse.Namespace, prompts: list) -> dict:
    name = args.model.name
    for messages in prompts:
        post(port, "/v1/chat/completions", {"model": name, "messages": messages, "max_tokens": 4, "temperature": 0})
    rows = {}
    for rate in args.rates:
        outcomes = drive(port, name, prompts, schedule(rate, args.duration, args.seed, len(prompts)),
                         args.max_tokens, args.drain)  # fmt: skip
        failed = [o.error or f"{o.tokens} tokens, not {args.max_tokens}" for o in outcomes
                  if o.error or (o.done is not None and o.tokens != args.max_tokens)]  # fmt: skip
        if not any(o.first for o in outcomes):
            raise StackError(f"no request at {rate:g} req/s received a token")
        if failed:
            raise StackError(f"{len(failed)} of {len(outcomes)} requests at {rate:g} req/s failed: {failed[0]}")
        rows[rate] = summarize(outcomes)
        s = rows[rate]
        line = f"{s.requests} requests ({s.unfinished} unfinished), {s.tokens} tokens in {s.elapsed:.1f} s"
        speed = f"{s.tokens_per_s:.1f} tok/s, TTFT {s.ttft_ms:.0f} ms, TPOT {s.tpot_ms:.1f} ms"
        print(f"rate {rate:g} req/s: {line}, {speed}", file=sys.stderr)
    return rows


def report(prefix: str, rows: dict) -> None:
    tokens = sum(s.tokens for s in rows.values())
    print(f"METRIC {prefix}output_tokens_per_s {tokens / sum(s.elapsed for s in rows.values()):.3f}")
    for rate, s in rows.items():
        print(f"METRIC {prefix}output_tokens_per_s_at_{rate:g} {s.tokens_per_s:.3f}")
        print(f"METRIC {prefix}ttft_ms_at_{rate:g} {s.ttft_ms:.2f}")
        print(f"METRIC {prefix}tpot_ms_at_{rate:g} {s.tpot_ms:.3f}")
        print(f"METRIC {prefix}unfinished_at_{rate:g} {s.unfinished}")


def baseline(args: argparse.Namespace, prompts: list) -> None:
    """vLLM under the same load, beside the stack; measured once and reused for the same inputs."""
    if importlib.util.find_spec("vllm") is None:
        print(f"vllm: not installed for {sys.executable} (import vllm fails); no vLLM baseline row", file=sys.stderr)
        return
    key = hashlib.sha256(json.dumps([str(args.model.resolve()), args.rates, args.duration, args.seed,
                                     args.max_tokens, prompts, version("vllm")]).encode()).hexdigest()[:16]  # fmt: skip
    saved = args.vllm_cache / f"{key}.json"
    if saved.is_file():
        print(f"vllm: reusing the row measured into {saved}", file=sys.stderr)
        rows = {float(r): s for r, s in json.loads(saved.read_text()).items()}
    else:
        rows = {rate: vars(s) for rate, s in vllm_rows(args, prompts).items()}
        if not rows:
            return
        try:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(rows))
        except OSError as error:
            print(f"vllm: row not saved ({error})", file=sys.stderr)
    from load import Summary

    report("vllm_", {rate: Summary(**s) for rate, s in rows.items()})


def vllm_rows(args: argparse.Namespace, prompts: list) -> dict:
    port = free_port()
    entry = Path(sys.executable).with_name("vllm")
    command = [str(entry), "serve"] if entry.exists() else [shutil.which("vllm") or "vllm", "serve"]
    command += [str(args.model), "--served-model-name", args.model.name, "--port", str(port)]
    command += ["--host", "127.0.0.1", "--seed", "0"]
    started = time.monotonic()
    try:
        with Server(command, port, ready_timeout=1800) as server:
            server.wait_ready()
            print(f"vllm: ready after {time.monotonic() - started:.0f} s", file=sys.stderr)
            return measure(port, args, prompts)
    except StackError as error:
        print(f"vllm: baseline failed: {error}", file=sys.stderr)
        return {}


if __name__ == "__main__":
    sys.exit(main())
