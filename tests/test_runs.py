import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from app import readonly
from app.inner import play
from app.loop import establish_baseline
from app.roles import Change, Task
from app.run import Options, create
from app.store import Store
from app.target import load
from conftest import TOY, atelier, rows
from test_target import one_repeat, write


def test_tuner_run_finds_a_real_gain_and_exports_it(toy, home, tmp_path):
    result = atelier("run", str(one_repeat(toy)), "--max-rounds", "1", home=home, check=True)
    assert "no LLM endpoint configured: using the offline tuner" in result.stdout
    [run] = rows(home, "SELECT * FROM runs")
    assert run["status"] == "done" and run["baseline"] > 0
    accepted = rows(home, "SELECT * FROM rounds WHERE status='accepted'")
    assert accepted and accepted[0]["task"] == "cache=kv"
    assert accepted[0]["ratio"] > 1 + run["noise"]
    assert run["best"] < run["baseline"]

    shown = atelier("show", run["id"], home=home, check=True).stdout
    assert f"baseline {run['baseline']:.4g}" in shown and f"best {run['best']:.4g}" in shown
    assert f"ratio {run['baseline'] / run['best']:.2f}×" in shown
    assert "cache=kv" in shown and "accepted" in shown
    assert run["headline_low"] > 1 and f"headline: best vs seed {run['headline']:.2f}×" in shown, shown
    assert f"cores {os.cpu_count()}" in next(line for line in shown.splitlines() if line.startswith("hardware: "))

    dest = tmp_path / "export"
    atelier("export", run["id"][:12], "--to", str(dest), home=home, check=True)
    assert "`cache` = `'kv'`" in (dest / "README.md").read_text()
    prompts = json.loads((toy / "inputs" / "prompts.json").read_text())["prompts"]
    asked = "".join(json.dumps({"id": i, "prompt": p, "max_tokens": 4}) + "\n" for i, p in enumerate(prompts))
    served = subprocess.run(
        [str(dest / "run.sh")], input=asked, env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
        text=True,
    )  # fmt: skip
    answers = [json.loads(line) for line in served.stdout.splitlines()]
    assert served.returncode == 0 and answers[0] == {"ready": True} and [a["id"] for a in answers[1:]] == [0, 1, 2]
    checked = subprocess.run(
        [sys.executable, str(toy / "check.py"), "--stack", str(dest), "--model", str(toy / "model"),
         "--inputs", str(toy / "inputs"), "--cache", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0 and "CHECK PASS" in checked.stdout


SABOTAGE = """
import os
_check = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "readonly", "check.py")
os.chmod(_check, 0o644)
open(_check, "a").write("# always pass")
"""


class EditsTheChecker:
    """Edits the checker from the candidate's code, at start, where a candidate of the old layout found it."""

    def implement(self, task, workspace, feedback):
        decode = workspace.path / "decode.py"
        text = decode.read_text().replace("HERE = Path(__file__).parent\n", "HERE = Path(__file__).parent\n" + SABOTAGE)
        decode.write_text(text)
        return Change("make decoding faster", ["decode.py"])


class HardCodesOutputs:
    """Answers the public prompts from a table of their reference outputs, and anything else with zeros."""

    def implement(self, task, workspace, feedback):
        run_dir = workspace.path.parent
        raw = (run_dir / "readonly" / "inputs" / "prompts.json").read_bytes()
        cached = run_dir / "cache" / f"reference-{hashlib.sha256(raw).hexdigest()[:16]}.json"
        table = dict(zip(map(str, json.loads(raw)["prompts"]), json.loads(cached.read_text()), strict=True))
        (workspace.path / "decode.py").write_text(
            f"import json, sys\nTABLE = {table!r}\nprint(json.dumps({{'ready': True}}), flush=True)\n"
            "for line in sys.stdin:\n    r = json.loads(line)\n"
            "    tokens = TABLE.get(str(r['prompt']), [0] * r['max_tokens'])\n"
            "    print(json.dumps({'id': r['id'], 'tokens': tokens}), flush=True)\n"
        )
        return Change("precomputed answers", ["decode.py"])


@pytest.fixture(scope="module")
def one_baseline(tmp_path_factory, toy_model):
    """One toy run with its baseline measured, shared by the tests that play a failing round on it."""
    bundle = tmp_path_factory.mktemp("judged") / "toy"
    shutil.copytree(TOY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(toy_model, bundle / "model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(bundle.parent / "home"))
        mp.setenv("ATELIER_CONFIG", os.devnull)
        run = create(load(str(bundle)), Options(baseline_repeats=2), Store())
        establish_baseline(run)
        yield run


@pytest.fixture
def baselined(one_baseline):
    one_baseline.workspace.reset(one_baseline.record.best_commit)
    return one_baseline


def test_judge_fails_a_candidate_that_edits_the_checker(baselined):
    outcome = play(baselined, 1, Task("sabotage"), EditsTheChecker())
    assert outcome.status == "failed"
    assert "readonly/check.py'" in outcome.reason and "No such file or directory" in outcome.reason  # out of sight
    assert readonly.verify(baselined.dir, baselined.manifest) == []
    assert [v["passed"] for v in baselined.store.verdicts(baselined.id, 1)] == [0]


def test_hidden_inputs_catch_hard_coded_outputs(baselined):
    outcome = play(baselined, 2, Task("cheat"), HardCodesOutputs())
    assert outcome.status == "failed"
    assert outcome.reason == "judge: hidden case set 1 failed: 2 check(s) failed (details are kept from agents)"


def bench_that(toy, body: str, timeout: int = 120) -> None:
    """The benchmark's body replaced, and a checker that passes at once: the run stops at the baseline's benchmark."""
    (toy / "bench.py").write_text(body)
    (toy / "check.py").write_text("print('CHECK PASS')\n")
    write(toy, "repeats = 2\ntimeout = 120", f"repeats = 2\ntimeout = {timeout}")


@pytest.mark.parametrize(
    "body, timeout, message",
    [
        ("print('done in 3 s')\n", 120, "benchmark printed no metric 'decode_s' (baseline); expected a line"),
        ("import time\ntime.sleep(600)\n", 3, "benchmark timed out after 3 s (baseline)"),
    ],
)
def test_broken_benchmark_is_one_clear_error_and_a_consistent_store(toy, home, body, timeout, message):
    bench_that(toy, body, timeout)
    result = atelier("run", str(toy), home=home)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"atelier: error: {message}" + errors[0].split(message, 1)[1]] and len(errors) == 1
    [run] = rows(home, "SELECT * FROM runs")
    assert run["status"] == "failed" and run["baseline"] is None
    assert rows(home, "SELECT * FROM rounds") == []
    assert "error" in [e["kind"] for e in rows(home, "SELECT * FROM events")]


def test_baseline_repeats_must_be_a_whole_number_of_at_least_one(toy, home):
    from app.cli import parser

    assert parser().parse_args(["run", str(toy), "--baseline-repeats", "2"]).baseline_repeats == 2
    for bad in ("0", "1.5", "-3"):
        result = atelier("run", str(toy), "--baseline-repeats", bad, home=home)
        assert result.returncode == 2 and "--baseline-repeats: expected a whole number of at least 1" in result.stderr
    assert not (home / "runs").exists()
