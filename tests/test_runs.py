import json
import os
import subprocess
import sys

import pytest

from app import readonly
from app.inner import play
from app.roles import Change, Task
from conftest import atelier, rows
from test_target import write


def test_tuner_run_finds_a_real_gain_and_exports_it(toy, home, tmp_path):
    result = atelier("run", str(toy), "--max-rounds", "3", home=home, check=True)
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
    """Edits the checker from the candidate's code: at import (so while checking), or only when imported
    by the benchmark (after the `__main__` guard's sys.exit, so the checker's own run never reaches it)."""

    def __init__(self, when: str):
        self.when = when

    def implement(self, task, workspace, feedback):
        decode = workspace.path / "decode.py"
        text = decode.read_text()
        if self.when == "checking":
            text = text.replace("HERE = Path(__file__).parent\n", "HERE = Path(__file__).parent\n" + SABOTAGE)
        else:
            guarded = 'if __name__ != "__main__":' + SABOTAGE.replace("\n", "\n    ")
            text = text.replace('if __name__ == "__main__":', guarded + '\nif __name__ == "__main__":')
        decode.write_text(text)
        return Change("make decoding faster", ["decode.py"])


class HardCodesOutputs:
    def implement(self, task, workspace, feedback):
        public = json.loads((workspace.path.parent / "cache").glob("reference-*.json").__next__().read_text())
        decode = workspace.path / "decode.py"
        decode.write_text(
            f"import json\nfor tokens in {public!r}:\n    print(json.dumps(tokens))\ndef knobs():\n    return {{}}\n"
        )
        return Change("precomputed answers", ["decode.py"])


@pytest.mark.parametrize("when, judged", [("checking", [0]), ("benchmarking", [1, 0])])
def test_judge_fails_a_candidate_that_edits_the_checker(baselined, when, judged):
    outcome = play(baselined, 1, Task("sabotage"), EditsTheChecker(when))
    assert outcome.status == "failed"
    assert "read-only input readonly/check.py: modified" in outcome.reason
    assert readonly.verify(baselined.dir, baselined.manifest) == []
    verdicts = baselined.store.verdicts(baselined.id, 1)
    assert [v["passed"] for v in verdicts if v["role"] == "judge"] == judged


def test_hidden_inputs_catch_hard_coded_outputs(baselined):
    outcome = play(baselined, 1, Task("cheat"), HardCodesOutputs())
    assert outcome.status == "failed"
    assert "prompt 0: tokens differ from the reference" in outcome.reason


def bench_that(toy, body: str, timeout: int = 120) -> None:
    (toy / "bench.py").write_text(body)
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
