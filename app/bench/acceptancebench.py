"""How often the acceptance test picks a wrong winner: false accepts, power per effect and calls, against today's rule.

The figures are replayed, and the bench says so: it first measures pools of real interleaved pairs through the real
harness (the target's own benchmark, confined as a run plays it, on fresh copies of the stacks): A/A pairs (the seed
against itself) and, on the toy target, known-effect pairs (an incumbent doing 5%, 10%, 20% more work, the toy
seed's extra_work.txt, against the seed), each on an idle machine and under a background load the bench starts (busy
processes, one per core). Then it plays many simulated runs on those pools: each run measures its baseline (A/A
pairs), then rounds of random kinds, each drawing pairs at random (with replacement) from its pool until the rule
decides (an A/A pair in either order, as one stack twice can come). Both rules see the same draws: the sequential
test (app/acceptance.py), and the rule it replaced (medians of the target's repeats a side against a noise band
frozen from the baseline's half-range).
"""

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.acceptance import Noise, Rule, decide

EFFECTS = (0.05, 0.10, 0.20)
TOY = Path(__file__).resolve().parents[2] / "tests" / "targets" / "toy"
MIN_NOISE = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="toy", help="toy (the tests' toy, known effects too) or json-tiny (A/A)")
    parser.add_argument("--pairs", type=int, default=6, help="real pairs measured per pool (default 6)")
    parser.add_argument("--runs", type=int, default=400, help="simulated runs replayed per condition (default 400)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds per simulated run (default 12)")
    parser.add_argument("--conditions", default="idle,loaded", help="idle, loaded or both (default idle,loaded)")
    parser.add_argument("--pools", type=Path, help="replay pools saved by an earlier call instead of measuring")
    parser.add_argument("--out", type=Path, help="write the pools and figures here as JSON")
    parser.add_argument("--seed", type=int, default=16, help="seed of the replay's draws (default 16)")


def main(args: argparse.Namespace) -> int:
    pools = json.loads(args.pools.read_text())["pools"] if args.pools else measure(args)
    figures = {c: replay(pool, args.runs, args.rounds, random.Random(args.seed)) for c, pool in pools.items()}
    print(report(pools, figures, args))
    if args.out:
        args.out.write_text(json.dumps({"pools": pools, "figures": figures}, indent=1))
    return 0


def measure(args: argparse.Namespace) -> dict:
    """Pools of real pairs per condition: {condition: {"load": …, "kinds": {kind: [[incumbent, candidate], …]}}}."""
    with tempfile.TemporaryDirectory(prefix="atelier-acceptance-") as home:
        os.environ["ATELIER_HOME"] = home
        run, stacks = _prepare(args.target, Path(home))
        pools = {}
        for condition in args.conditions.split(","):
            with background(condition == "loaded"):
                pools[condition] = _pool(run, stacks, args.pairs)
        return pools


def _prepare(name: str, home: Path):
    from app.judge import judge
    from app.run import Options, create
    from app.store import Store
    from app.target import load

    bundle = Path(name) if Path(name).is_dir() else None
    if name == "toy":
        bundle = home / "toy"
        shutil.copytree(TOY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, str(bundle / "make_model.py"), str(bundle / "model")], check=True)
    run = create(load(str(bundle or name)), Options(), Store(home / "atelier.db"))
    seed = run.snapshot(run.workspace.head).path
    if not judge(run, None, seed).passed:
        raise SystemExit("the seed fails its checker: nothing to measure")
    stacks = {"A/A": (seed, seed)}
    for effect in EFFECTS if name == "toy" else ():
        slower = home / f"extra-{effect:g}"
        shutil.copytree(seed, slower)
        slower.chmod(0o755)
        (slower / "extra_work.txt").write_text(f"{effect}\n")
        stacks[f"+{effect:.0%}"] = (slower, seed)
    return run, stacks


def _pool(run, stacks: dict, pairs: int) -> dict:
    """Pairs of every kind, the kinds taking turns and each pair's order alternating, as a round plays them."""
    from app.evaluator import bench_once

    metric = run.target.benchmark.metric
    kinds: dict[str, list[list[float]]] = {kind: [] for kind in stacks}
    started, loads = time.monotonic(), []
    for i in range(pairs):
        for kind, (incumbent, candidate) in stacks.items():
            order = [("incumbent", incumbent), ("candidate", candidate)]
            values = {side: bench_once(run, 1, side, stack, i)[metric] for side, stack in order[:: 1 - 2 * (i % 2)]}
            kinds[kind].append([values["incumbent"], values["candidate"]])
        loads.append(os.getloadavg()[0])
    return {"kinds": kinds, "load": statistics.fmean(loads), "seconds": time.monotonic() - started}


class background:
    """Busy processes, one per core, for the loaded condition; nothing when off."""

    def __init__(self, on: bool):
        self.on = on
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        if self.on:
            spin = [sys.executable, "-c", "while True: pass"]
            self.procs = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 1)]
            time.sleep(2)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def noise_band(values: list[float]) -> float:
    """Today's rule's band: the relative half-range of the baseline's repeats around their median."""
    median = statistics.median(values)
    return max(MIN_NOISE, (max(values) - min(values)) / 2 / median) if median else MIN_NOISE


@dataclass
class Tally:
    rounds: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, accepted: bool, calls: int) -> None:
        self.rounds[kind] = self.rounds.get(kind, 0) + 1
        self.accepted[kind] = self.accepted.get(kind, 0) + int(accepted)
        self.calls[kind] = self.calls.get(kind, 0) + calls


def replay(pool: dict, runs: int, rounds: int, rng: random.Random, repeats: int = 2, baseline_calls: int = 4) -> dict:
    """Simulated runs on the pool's real pairs: both rules, the same draws. A pair is (incumbent, candidate) in a
    lower-is-better metric: its gain is incumbent / candidate."""
    kinds = pool["kinds"]
    rule = Rule.for_target(repeats)
    new, old = Tally(), Tally()
    for _ in range(runs):
        start = [draw(kinds, "A/A", rng) for _ in range(baseline_calls // 2)]
        band = noise_band([v for pair in start for v in pair])
        noise = Noise()
        noise.add([math.log(i / c) for i, c in start], 0.0)
        for _ in range(rounds):
            kind = rng.choice(list(kinds))
            draws = [draw(kinds, kind, rng) for _ in range(max(rule.max_pairs, repeats))]
            ratios = []
            for i, c in draws[: rule.max_pairs]:
                ratios.append(math.log(i / c))
                decision = decide(ratios, noise, rule)
                if decision.verdict != "more":
                    break
            noise.add(ratios)
            new.add(kind, decision.verdict == "accept", 2 * len(ratios))
            sides = draws[:repeats]
            gain = statistics.median(i for i, _ in sides) / statistics.median(c for _, c in sides)
            old.add(kind, gain > 1 + band, 2 * repeats)
    return {"sequential": new.__dict__, "today": old.__dict__}


def draw(kinds: dict, kind: str, rng: random.Random) -> list[float]:
    """A real pair at random; an A/A pair in either order (one stack twice), so the A/A pool's own sampling error
    cannot pass for an effect."""
    pair = rng.choice(kinds[kind])
    return pair[::-1] if kind == "A/A" and rng.random() < 0.5 else pair


def report(pools: dict, figures: dict, args: argparse.Namespace) -> str:
    rule = Rule.for_target(2)
    lines = [
        "atelier bench acceptance: figures REPLAYED from pools of real pairs measured here through the real harness",
        f"(draws with replacement; {args.runs} simulated runs of {args.rounds} rounds per condition, seed {args.seed})",
        f"sequential test: alpha {rule.alpha:g} over up to {rule.max_pairs} pairs, minimum effect "
        f"{rule.min_effect:.0%}, futility {rule.futility:g}; today's rule: medians of 2 calls a side vs the band "
        "of 4 baseline calls",
        "per run on top of the rounds: 4 baseline calls for both rules; the sequential test's end-of-run confirmation "
        f"(up to {2 * rule.max_pairs} calls) once",
        "",
    ]
    for condition, pool in pools.items():
        lines.append(f"{condition}: mean load {pool['load']:.2f} over {pool['seconds']:.0f} s of measuring")
        for kind, pairs in pool["kinds"].items():
            ratios = [math.log(i / c) for i, c in pairs]
            spread = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
            lines.append(
                f"  pool {kind:<5} {len(pairs):>3} real pairs: gain {math.exp(statistics.fmean(ratios)):.3f}×, "
                f"log-ratio sd {spread:.3f}"
            )
        lines.append(f"  {'rule':<11}{'kind':<7}{'rounds':>7}{'accepted':>10}{'rate':>8}{'calls/round':>13}")
        for name, tally in figures[condition].items():
            for kind in pool["kinds"]:
                n, a, calls = (tally[key].get(kind, 0) for key in ("rounds", "accepted", "calls"))
                what = "false" if kind == "A/A" else "power"
                rate = f"{a / n:.1%}" if n else "-"
                lines.append(f"  {name:<11}{kind:<7}{n:>7}{a:>10}{rate:>8}{calls / max(n, 1):>13.2f}  {what}")
            total = sum(tally["calls"].values()) / max(sum(tally["rounds"].values()), 1)
            lines.append(f"  {name:<11}{'all':<7}{sum(tally['rounds'].values()):>7}{'':>18}{total:>13.2f}")
        lines.append("")
    return "\n".join(lines)
