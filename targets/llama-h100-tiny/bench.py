"""Serve the candidate under open-loop Poisson load and report output token throughput, TTFT and TPOT.

python bench.py --stack WORKSPACE --model MODEL --inputs PROMPTS_DIR --cache CACHE_DIR [--rates 8,32,64,128]
                [--duration 60] [--seed 42] [--max-tokens 128] [--drain 600] [--near-tie GAP] [--vllm auto|off]
Starts the stack's server on a free port, sends one untimed warm-up request per prompt, then for each rate sends
requests at Poisson arrival times (seeded) for --duration seconds, every one streamed with temperature 0,
ignore_eos and return_token_ids, so each yields --max-tokens tokens. Requests still running --drain seconds after
the last was sent are closed (the server should drop them) and counted as unfinished; their tokens so far count.
At random positions (a fresh seed per call) MIXED arrivals per rate carry one of the checker's public suite
prompts instead; their token ids must equal the greedy reference the checker cached in CACHE_DIR (up to the shorter
of the two, as the checker compares them), else CHECK FAIL benchmark: ... and exit 1; METRIC checked_outputs says
how many were checked. Prints METRIC output_tokens_per_s (all rates' output tokens over their summed wall times,
each from its first request sent to its last token), and per rate R output_tokens_per_s_at_R, ttft_ms_at_R,
tpot_ms_at_R and unfinished_at_R. With --vllm auto and vLLM importable here, `vllm serve` gets the same load
(no suite prompt mixed in) and its numbers are printed as vllm_* METRIC lines (measured once per model, load and
vLLM version, then reused from --vllm-cache); without vLLM it says so.
"""

import argparse
import hashlib
import importlib.util
import json
import random
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check import cached_references, token_difference  # noqa: E402
from load import Arrival, drive, schedule, summarize  # noqa: E402
from stack import Server, StackError, free_port, one_line, post, stack_server  # noqa: E402

VLLM_CACHE = Path("~/.cache/atelier/llama-bench-vllm").expanduser()
SUITE = Path(__file__).resolve().parent / "suite"
MIXED = 2
NO_REFERENCE = "CHECK FAIL benchmark: no reference outputs in the cache for these inputs (run the checker first)"


def main() -> int:
    args = parse_args()
    prompts = [case["messages"] for case in json.loads((args.inputs / "prompts.json").read_text())]
    suite = json.loads((SUITE / "prompts.json").read_text())
    expected = cached_references(args.model, suite, args.cache)
    if expected is None:
        print(NO_REFERENCE)
        return 1
    port = free_port()
    try:
        with stack_server(args.stack, args.model, port) as server:
            startup = server.wait_ready()
            rows, mixed = measure(port, args, prompts, suite)
    except StackError as error:
        print(f"bench failed: {one_line(error)}", file=sys.stderr)
        return 1
    checked = [(f"{name} (at {rate:g} req/s)", reason) for name, rate, outcome in mixed
               if (reason := mismatch(outcome, expected[name], args.near_tie)) is not None]  # fmt: skip
    for name, reason in checked:
        if reason:
            print(f"CHECK FAIL benchmark: {name} differs from the reference: {one_line(reason)}")
    if any(reason for _, reason in checked):
        return 1
    report("", rows)
    print(f"METRIC startup_s {startup:.3f}")
    print(f"METRIC checked_outputs {len(checked)}")
    if args.vllm == "auto":
        baseline(args, prompts)
    return 0


def mismatch(outcome, expected: dict, near_tie: float) -> str | None:
    """Why a mixed-in suite answer's token ids differ from the reference ('' when they do not); None when an
    unfinished request brought back no token to check."""
    if outcome.done is not None and len(outcome.ids) != outcome.tokens:
        return f"{len(outcome.ids)} token ids for {outcome.tokens} tokens"
    if not outcome.ids:
        return None
    n = min(len(outcome.ids), len(expected["tokens"]))
    return token_difference(outcome.ids[:n], expected["tokens"][:n], expected["gaps"], near_tie)[0]


def mix(arrivals: list[Arrival], first: int, suite: int, rng: random.Random) -> list[int]:
    """Give MIXED arrivals at random positions a suite prompt (numbered from first); their positions."""
    positions = rng.sample(range(len(arrivals)), min(MIXED, len(arrivals)))
    for position in positions:
        arrivals[position] = Arrival(arrivals[position].at, first + rng.randrange(suite))
    return positions


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="llama serving benchmark")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", required=True, type=Path, help="folder with prompts.json")
    parser.add_argument("--cache", required=True, type=Path, help="the checker's cache: its reference outputs")
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
    parser.add_argument("--near-tie", default=0.0, type=float, help="as the checker's: a divergence allowed below")
    parser.add_argument("--vllm", default="auto", choices=["auto", "off"])
    parser.add_argument("--vllm-cache", default=VLLM_CACHE, type=Path)
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    return args


def measure(port: int, args: argparse.Namespace, prompts: list, suite: list = ()) -> tuple[dict, list]:
    """Rows per rate, and (suite prompt name, rate, outcome) of each request that carried a suite prompt."""
    name, rng, mixed = args.model.name, random.SystemRandom(), []
    for messages in prompts:
        post(port, "/v1/chat/completions", {"model": name, "messages": messages, "max_tokens": 4, "temperature": 0})
    rows = {}
    every = prompts + [case["messages"] for case in suite]
    for rate in args.rates:
        arrivals = schedule(rate, args.duration, args.seed, len(prompts))
        positions = mix(arrivals, len(prompts), len(suite), rng) if suite else []
        outcomes = drive(port, name, every, arrivals, args.max_tokens, args.drain)
        for position in positions:
            case = suite[arrivals[position].prompt - len(prompts)]
            mixed.append((case["name"], rate, outcomes[position]))
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
    return rows, mixed


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
            return measure(port, args, prompts)[0]
    except StackError as error:
        print(f"vllm: baseline failed: {error}", file=sys.stderr)
        return {}


if __name__ == "__main__":
    sys.exit(main())
