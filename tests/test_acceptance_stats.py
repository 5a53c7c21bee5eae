import json
import math
import random
import shutil
import subprocess
import sys

import pytest

from app.acceptance import Noise, Rule, decide, t_cdf, t_quantile
from app.evaluator import evaluate, run_noise
from app.policies import tuner
from app.store import SCHEMA_VERSION, Round, Run, Store
from app.views import rounds_table
from conftest import ROOT


def test_t_quantiles_match_the_tables():
    for p, df, t in [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 10, 2.228), (0.995, 30, 2.750)]:
        assert t_quantile(p, df) == pytest.approx(t, abs=1e-3)
    assert t_cdf(-2.228, 10) == pytest.approx(0.025, abs=1e-4)


def play(effect: float, spread: float, rounds: int, rng: random.Random, rule: Rule) -> tuple[float, float]:
    """Simulated rounds of one run on normal log-ratios: the share accepted and the mean pairs a round."""
    noise = Noise()
    noise.add([rng.gauss(0, spread) for _ in range(2)], 0.0)
    accepted = pairs = 0
    for _ in range(rounds):
        ratios = [rng.gauss(math.log1p(effect), spread)]
        while (decision := decide(ratios, noise, rule)).verdict == "more":
            ratios.append(rng.gauss(math.log1p(effect), spread))
        noise.add(ratios)
        accepted += decision.verdict == "accept"
        pairs += len(ratios)
    return accepted / rounds, pairs / rounds


def test_false_accepts_stay_under_alpha_and_a_clear_gain_is_found():
    rule = Rule()
    false = [play(0.0, 0.05, 1000, random.Random(seed), rule)[0] for seed in range(4)]
    assert sum(false) / 4 <= 0.01
    power, pairs = play(0.10, 0.03, 400, random.Random(16), rule)
    assert power >= 0.9 and pairs <= 2
    slower, pairs = play(-0.10, 0.03, 400, random.Random(16), rule)
    assert slower == 0 and pairs <= 1.5


def test_a_round_without_any_spread_yet_asks_for_more_pairs_then_rejects_at_the_cap():
    rule = Rule(max_pairs=2)
    first = decide([0.5], Noise(), rule)
    assert (first.verdict, first.pairs, first.spread) == ("more", 1, None)
    capped = decide([0.01, 0.2], Noise(), rule)
    assert capped.verdict == "reject" and capped.low < 1 < capped.high and capped.why == "not shown better in 2 pairs"


def test_noise_pools_the_most_recent_rounds_only():
    noise = Noise()
    noise.add([0.3, -0.3], 0.0)
    noise.add([0.1, 0.2, 0.3])
    assert noise.recent(2) == (pytest.approx(0.02), 2)
    assert noise.spread(3) == pytest.approx(math.sqrt((0.18 + 0.02) / 4))


def test_store_migrates_to_intervals_and_headlines(tmp_path):
    store = Store(tmp_path / "a.db")
    store.db.execute("INSERT INTO rounds (run_id, n, task, status, started) VALUES ('r', 1, 'w=f', 'accepted', 0)")
    for table, column in [("rounds", "low"), ("rounds", "high"), ("rounds", "pairs"), ("runs", "headline")]:
        store.db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    store.db.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    store.close()
    store = Store(tmp_path / "a.db")
    [old] = store.rounds("r")
    assert (old.low, old.high, old.pairs) == (None, None, None)
    assert store.db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION) == "5"
    store.set_round("r", 1, low=1.1, high=1.3, pairs=3)
    assert store.rounds("r")[0].pairs == 3


def test_pairs_are_read_back_in_the_order_measured(tmp_path):
    store = Store(tmp_path / "a.db")
    for i, value in enumerate([1.0, 1.1, 1.2, 0.9, 5.0]):
        store.add_metrics("r", 0, "baseline", i, {"s": value})
    for side, repeat, value in [("incumbent", 0, 2.0), ("incumbent", 0, 2.1), ("candidate", 0, 1.0),
                                ("candidate", 1, 1.1), ("incumbent", 1, 2.2), ("candidate", 0, 3.0),
                                ("best", 0, 1.5)]:  # fmt: skip
        store.add_metrics("r", 1, side, repeat, {"s": value, "other": 0.0})
    assert store.pairs("r", "s") == [
        (True, [(1.0, 1.1), (1.2, 0.9)]),
        (False, [(2.1, 1.0), (2.2, 1.1)]),
        (False, [(1.5, 3.0)]),
    ]


def test_show_prints_each_rounds_interval_and_the_confirmed_headline():
    run = Run("r1", "toy", "/t", "mlx", "tuner", "done", "decode_s", "lower", 2.0, 0.04, 1.0, "c1", "/d", "b", None,
              0.0, 0.0, "{}", "{}", 1.9, 1.7, 2.1)  # fmt: skip
    rounds = [
        Round("r1", 1, "cache=kv", "{}", "accepted", "c0", "c1", 1.0, 2.0, 2.0, "ok", 0.0, 1.0, None, 1.8, 2.2, 3)
    ]
    shown = rounds_table(run, rounds)
    assert "1.80–2.20  3" in shown and "noise ±4.0% a pair" in shown
    assert "headline: best vs seed 1.90× (1.70–2.10, confirmed side by side)" in shown
    run.headline = None
    assert "headline: not confirmed yet" in rounds_table(run, rounds)


@pytest.mark.slow
def test_a_known_effect_on_the_toy_is_accepted_with_its_interval(baselined):
    """The incumbent is the toy seed doing twice its work (extra_work.txt): the seed beats it about 2×."""
    run = baselined
    seed = run.snapshot(run.workspace.head).path
    doubled = run.dir / "doubled"
    shutil.copytree(seed, doubled)
    doubled.chmod(0o755)
    (doubled / "extra_work.txt").write_text("1.0\n")
    before = run_noise(run).recent(100)[1]
    m = evaluate(run, 1, seed, doubled)
    assert (
        m.accepted and 1 < m.low < m.gain < m.high and m.gain > 1.5 and m.pairs == len(m.candidate) <= Rule().max_pairs
    )
    assert m.summary.startswith(f"decode_s {m.candidate_median:.4g} vs {m.incumbent_median:.4g} side by side, ")
    assert run_noise(run).recent(100)[1] == before + m.pairs - 1


def test_the_tuner_pairs_only_changes_whose_interval_still_reaches_the_minimum_gain():
    current = {"a": 0, "b": 0, "c": 0}
    rounds = [
        {"from": current, "changes": {"a": 1}, "gain": 1.04, "high": 1.02},  # stopped: cannot reach 5%
        {"from": current, "changes": {"b": 1}, "gain": 1.03, "high": 1.2},  # undecided
        {"from": current, "changes": {"c": 1}, "gain": 1.02, "high": None},  # measured before intervals
        {"from": current, "changes": {"a": 2}, "gain": 0.9, "high": 1.1},  # slower
    ]
    assert tuner._promising(current, rounds) == [{"b": 1}, {"c": 1}]


@pytest.mark.slow
def test_bench_acceptance_measures_real_pools_then_replays_them_the_same_way(tmp_path):
    """One real pair per kind and condition through the toy's harness, then the replay: the same pools give the same
    figures, and both rules are reported on the same draws."""
    out, again = tmp_path / "first.json", tmp_path / "again.json"
    bench = [sys.executable, "-m", "app", "bench", "acceptance", "--pairs", "1", "--runs", "20", "--rounds", "3"]
    first = subprocess.run([*bench, "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert first.returncode == 0, first.stdout + first.stderr
    saved = json.loads(out.read_text())
    assert set(saved["pools"]) == {"idle", "loaded"}
    for pool in saved["pools"].values():
        assert set(pool["kinds"]) == {"A/A", "+5%", "+10%", "+20%"}
        assert all(len(pairs) == 1 and min(pairs[0]) > 0 for pairs in pool["kinds"].values())
    for word in ("idle: mean load", "loaded: mean load", "pool +10%", "sequential", "today"):
        assert word in first.stdout, first.stdout
    replayed = subprocess.run([*bench, "--pools", str(out), "--out", str(again)], capture_output=True, text=True,
                              timeout=300, cwd=ROOT)  # fmt: skip
    assert replayed.returncode == 0 and json.loads(again.read_text()) == saved, replayed.stderr
