"""External coding-agent Implementers (`codex exec --json`, `claude -p --output-format stream-json`). Each CLI is
replaced by a stand-in on PATH that replays a recorded event stream and makes the recorded edit: the LLM stand-in."""

import json
import os
import sys
from pathlib import Path

import pytest

from app.agents.external import change, last_object
from app.roles import RoleError
from conftest import atelier, rows
from scripted_llm import ScriptedLLM
from test_agents import FAST_PATH, KEY_ENV, PASS, SLOW_PATH, configure, evaluator_reading
from test_target import one_repeat

SUBMIT = {"summary": "keep the cache for multi-token decodes", "files_changed": ["decode.py"], "claims": ["same"]}
FINAL = "Done: decode.py keeps keys and values.\n```json\n" + json.dumps(SUBMIT) + "\n```\n"
EVENTS = {
    "codex": [
        {"type": "thread.started", "thread_id": "t1"},
        {"type": "item.completed", "item": {"type": "command_execution", "command": "cat decode.py", "exit_code": 0}},
        {"type": "item.completed", "item": {"type": "agent_message", "text": FINAL}},
        {"type": "turn.completed", "usage": {"input_tokens": 1200, "cached_input_tokens": 0, "output_tokens": 80}},
    ],
    "claude": [
        {"type": "system", "subtype": "init", "session_id": "s1"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Editing decode.py"}]}},
        {"type": "result", "subtype": "success", "is_error": False, "result": FINAL, "total_cost_usd": 0.0123,
         "usage": {"input_tokens": 900, "output_tokens": 70}},
    ],
}  # fmt: skip
STAND_IN = """#!{python}
import json, os, sys
from pathlib import Path
Path(os.environ["STAND_IN_ARGV"]).write_text(json.dumps(sys.argv[1:]))
decode = Path("decode.py")
decode.write_text(decode.read_text().replace({slow!r}, {fast!r}))
for event in {events!r}:
    print(json.dumps(event), flush=True)
"""


def stand_in(folder: Path, harness: str, events: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / harness
    script.write_text(STAND_IN.format(python=sys.executable, slow=SLOW_PATH, fast=FAST_PATH, events=events))
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize("harness", ["codex", pytest.param("claude", marks=pytest.mark.slow)])
def test_an_external_agent_implements_a_real_gain(harness, toy, home, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-planted-external-key")
    monkeypatch.setenv("PATH", f"{stand_in(tmp_path / 'bin', harness, EVENTS[harness])}:{os.environ['PATH']}")
    monkeypatch.setenv("STAND_IN_ARGV", str(tmp_path / "argv.json"))
    server = ScriptedLLM()
    try:
        config = configure(tmp_path, monkeypatch, server)
        config.write_text(
            config.read_text().replace("[roles.implementer]\n", f'[roles.implementer]\nharness = "{harness}"\n')
        )
        server.add("judge", PASS)
        server.add("evaluator", evaluator_reading())
        atelier(
            "run", str(one_repeat(toy)), "--policy", "ralph", "--max-rounds", "1", "--no-confirm", home=home, check=True
        )
    finally:
        server.close()
    [run] = rows(home, "SELECT * FROM runs")
    [round_] = rows(home, "SELECT * FROM rounds")
    assert round_["status"] == "accepted", round_["reason"]
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert ("exec" in argv and "--json" in argv) if harness == "codex" else ("stream-json" in argv)
    assert "end your final message with one JSON object" in " ".join(argv)
    [usage] = rows(home, "SELECT * FROM usage WHERE role='implementer' AND calls=1")
    assert (usage["tokens_in"], usage["tokens_out"]) == ((1200, 80) if harness == "codex" else (900, 70))
    transcript = Path(run["dir"]) / "transcripts" / "round-1" / "implementer.jsonl"
    kinds = [json.loads(line)["kind"] for line in transcript.read_text().splitlines()]
    assert kinds == ["request"] + ["event"] * len(EVENTS[harness])


def test_the_final_message_must_end_with_a_valid_submit():
    assert last_object(FINAL) == SUBMIT
    assert last_object('{"a": 1} and then more words') is None
    assert change(FINAL).files == ["decode.py"]
    with pytest.raises(RoleError, match="ends with no JSON object"):
        change("I changed decode.py.")
    with pytest.raises(RoleError, match="not a valid submit: 'claims' is a required property"):
        change(json.dumps({"summary": "x", "files_changed": []}))
