"""The whole loop on the real SmolLM2 weights (one public and one hidden case): baseline, one tuner round whose
benchmark checks the answers it timed, show, export, checker on the export, and the export's run.sh serving the
OpenAI client."""

import json
import os
import shutil
import subprocess
import sys

import jsonschema
import pytest
import tomlkit
from test_json_seed import ask, ready_port

from conftest import ONE_ROUND, ROOT, atelier, rows

TICKET = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 20}, "urgent": {"type": "boolean"}},
    "required": ["title", "urgent"],
    "additionalProperties": False,
}


def one_case_each(bundle) -> None:
    """One public and one hidden case: the loop's plumbing on real weights, not the whole workload."""
    for folder, keep in (("suite", "review.json"), ("hidden", "order.json")):
        for path in (bundle / folder).iterdir():
            if path.name != keep:
                path.unlink()


def once_per_side(target_toml) -> None:
    """One benchmark call per side in a round: the change measured is far beyond the noise."""
    doc = tomlkit.parse(target_toml.read_text())
    doc["benchmark"]["repeats"] = 1
    target_toml.write_text(tomlkit.dumps(doc))


def only_blas_left(knobs_file) -> None:
    """Dense weights from the start and every knob but `blas` pinned, so round 1 is blas=openblas."""
    doc = tomlkit.parse(knobs_file.read_text())
    doc["weights"]["default"] = "fp32"
    for name, knob in doc.items():
        if name != "blas":
            knob["values"] = [knob["default"]]
            knob.pop("when", None)
    knobs_file.write_text(tomlkit.dumps(doc))


@pytest.mark.slow
def test_json_tiny_run_accepts_openblas_and_exports(tmp_path, home):
    bundle = tmp_path / "json-tiny"
    shutil.copytree(ROOT / "targets" / "json-tiny", bundle, ignore=shutil.ignore_patterns("__pycache__"))
    one_case_each(bundle)
    once_per_side(bundle / "target.toml")
    only_blas_left(bundle / "seed" / "atelier.knobs.toml")
    result = atelier("run", str(bundle), *ONE_ROUND, "--verbose", home=home, timeout=1500, check=True)
    assert "round   1  accepted" in result.stdout, result.stdout
    assert "| CHECK PASS 1 schemas" in result.stdout and "| METRIC checked_outputs 1" in result.stdout

    [run] = rows(home, "SELECT * FROM runs")
    [round1] = rows(home, "SELECT * FROM rounds")
    assert round1["task"] == "blas=openblas" and round1["status"] == "accepted"
    assert round1["ratio"] > 1 + run["noise"]
    shown = atelier("show", run["id"], home=home, check=True).stdout
    assert f"ratio {run['baseline'] / run['best']:.2f}×" in shown

    dest = tmp_path / "export"
    atelier("export", run["id"], "--to", str(dest), home=home, check=True)
    assert (dest / "run.sh").exists() and "blas` = `'openblas'`" in (dest / "README.md").read_text()
    model = next((home / "models").iterdir())
    checked = subprocess.run(
        [sys.executable, f"{run['dir']}/readonly/check.py", "--stack", str(dest), "--model", str(model),
         "--inputs", f"{run['dir']}/readonly/suite", "--cache", f"{run['dir']}/cache"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    served_by_run_sh(dest)


def served_by_run_sh(stack) -> None:
    from openai import OpenAI

    env = {**os.environ, "PYTHON": sys.executable}
    process = subprocess.Popen(
        [str(stack / "run.sh"), "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{ready_port(process)}/v1", api_key="none", max_retries=0)
        plain, streamed = ask(client, TICKET), ask(client, TICKET, stream=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert plain == streamed and plain[1] == "stop"
    jsonschema.validate(json.loads(plain[0]), TICKET)
