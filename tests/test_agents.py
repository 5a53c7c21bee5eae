import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from app import policies, readonly
from app.agents import budget, config, schemas
from app.agents.roles import LLMEvaluator
from app.agents.team import Team
from app.agents.tools import Toolbox, ToolError, cut
from app.agents.transcript import Redactor
from app.cli import main
from app.inner import play
from app.loop import synthesize
from app.roles import Measurement, Task
from app.run import Options, reopen
from app.store import Store
from app.tui import transcripts
from conftest import atelier, rows
from scripted_llm import Reply, ScriptedLLM, call, late, raw, say, status
from test_runs import SABOTAGE

KEY_ENV = "ATELIER_TEST_KEY"
SLOW_PATH = 'if settings["cache"] == "kv":'
FAST_PATH = 'if settings["cache"] == "kv" or max_tokens > 1:'


@pytest.fixture
def key(monkeypatch) -> str:
    value = "sk-planted-" + secrets.token_hex(12)
    monkeypatch.setenv(KEY_ENV, value)
    return value


@pytest.fixture
def llm(home, tmp_path, monkeypatch, key):
    server = ScriptedLLM()
    configure(tmp_path, monkeypatch, server)
    yield server
    server.close()


def configure(tmp_path: Path, monkeypatch, server: ScriptedLLM, budget: str = "", timeout_s: float = 20) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[llm]\nbase_url = "{server.url}"\nmodel = "orchestrator"\napi_key_env = "{KEY_ENV}"\nmax_retries = 1\n'
        + "".join(f'[roles.{r}]\nmodel = "{r}"\n' for r in ("implementer", "judge", "evaluator"))
        + "".join(f'[prices."{m}"]\ninput = 2.0\noutput = 8.0\n' for m in config.ROLES)
        + f"[budget]\ncall_timeout_s = {timeout_s}\n{budget}"
    )
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    return path


def submit_change(summary: str, files: list[str], **extra) -> Reply:
    return call("submit", summary=summary, files_changed=files, claims=["same tokens as the reference"], **extra)


PASS = call("submit", verdict="pass", failed_checks=[], reward_hacking_findings=[])


def faster_implementer(key: str = "") -> list[Reply]:
    return [
        call("run", said=f"checking my environment (never print {key})", command=f"echo key=${{{KEY_ENV}:-unset}}"),
        call("write", path="../readonly/check.py", content="print('CHECK PASS')"),
        call("read", path="decode.py"),
        call("edit", path="decode.py", old=SLOW_PATH, new=FAST_PATH),
        submit_change("keep keys and values whenever more than one token is decoded", ["decode.py"]),
    ]


def evaluator_reading(**extra) -> Reply:
    return call("submit", metric="decode_s", bottleneck="one forward per token", hints=["compile the step"], **extra)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_issues_run_accepts_a_real_gain_and_orchestrates_the_next_issue(toy, llm, key, home):
    llm.add(
        "orchestrator",
        call("read", path="decode.py"),
        call(
            "submit", issue_id=1, new_issues=[{"title": "compile the forward", "detail": "mx.compile the step"}],
            memory_edits=[{"kind": "learned", "text": "the seed recomputes the whole sequence every token"}],
        ),
        call("submit", issue_id=2, new_issues=[], memory_edits=[], revert_to="0123abc"),
        lambda request: call(
            "submit", issue_id=2, new_issues=[], revert_to=re.findall(r"commit ([0-9a-f]{12})", request.text)[0],
            memory_edits=[{"kind": "learned", "text": "keeping keys and values was a real gain"}],
        ),
    )  # fmt: skip
    llm.add("implementer", *faster_implementer(key), submit_change("nothing to change yet", []))
    llm.add("judge", call("read", path="decode.py"), PASS)
    llm.add("evaluator", evaluator_reading(new_issues=[{"title": "profile the prefill", "detail": ""}]))

    result = atelier("run", str(toy), "--max-rounds", "2", "--no-confirm", home=home, check=True)
    assert "using --policy issues" in result.stdout
    [run] = rows(home, "SELECT * FROM runs")
    assert run["policy"] == "issues" and run["status"] == "done"
    first, second = rows(home, "SELECT * FROM rounds ORDER BY n")
    assert first["status"] == "accepted" and first["task"] == "#1 the target's objective"
    assert first["ratio"] > 1 + run["noise"] and run["best_commit"] == first["commit_sha"]
    workspace = Path(run["dir"]) / "workspace"
    shown = subprocess.run(["git", "show", f"{first['commit_sha']}:decode.py"], cwd=workspace, capture_output=True)
    assert FAST_PATH in shown.stdout.decode()
    assert second["status"] == "failed" and second["task"] == "#2 compile the forward"
    assert second["reason"] == "implementer: the workspace is unchanged"

    verdicts = rows(home, "SELECT * FROM verdicts WHERE round=1 ORDER BY ts")
    assert [(v["role"], v["passed"]) for v in verdicts] == [("judge", 1), ("judge", 1), ("evaluator", 1)]
    assert json.loads(verdicts[1]["reasons"]) == ["LLM review: pass"]
    assert "bottleneck (decode_s): one forward per token" in json.loads(verdicts[2]["reasons"])
    issues = {i["id"]: i for i in rows(home, "SELECT * FROM issues")}
    assert [(i["status"], i["source"]) for i in issues.values()] == [
        ("done", "target"), ("open", "orchestrator"), ("open", "evaluator")
    ]  # fmt: skip
    assert issues[2]["history"] == "round 2 failed: implementer: the workspace is unchanged\n"
    memory = (Path(run["dir"]) / "memory.md").read_text()
    assert "## Round 1\n\n- [learned] the seed recomputes" in memory and "## Round 2\n\n- [learned] keeping" in memory
    second_pick = llm.to("orchestrator")[-2].text
    assert "#1 [done] the target's objective" in second_pick and "round 1 [accepted" in second_pick
    assert "revert_to 0123abc is not the commit of one accepted round" in llm.to("orchestrator")[-1].tool_results()[-1]
    events = [e["message"] for e in rows(home, "SELECT * FROM events WHERE kind='orchestrate'")]
    assert events == ["issue #1: the target's objective", f"reverted to round 1 ({first['commit_sha'][:12]})",
                      "issue #2: compile the forward"]  # fmt: skip

    implementer = llm.to("implementer")
    assert "outside the workspace" in implementer[2].tool_results()[-1]
    assert implementer[1].tool_results()[-1] == "exit code 0\nkey=unset"
    usage = {u["role"]: u for u in rows(home, "SELECT role, SUM(calls) calls, SUM(tokens_in) t, SUM(cost) cost, "
                                               "SUM(active_s) s FROM usage GROUP BY role")}  # fmt: skip
    assert usage["implementer"]["calls"] == 6 and usage["implementer"]["t"] == 6 * 120
    assert usage["implementer"]["cost"] == pytest.approx(6 * (120 * 2.0 + 30 * 8.0) / 1e6)
    assert usage["orchestrator"]["calls"] == 4 and usage["judge"]["s"] > 0
    transcripts = Path(run["dir"]) / "transcripts"
    assert sorted(str(p.relative_to(transcripts)) for p in files_under(transcripts)) == [
        "round-1/evaluator.jsonl", "round-1/implementer.jsonl", "round-1/judge.jsonl", "round-1/orchestrator.jsonl",
        "round-2/implementer.jsonl", "round-2/orchestrator.jsonl",
    ]  # fmt: skip
    lines = [json.loads(line) for line in (transcripts / "round-1" / "implementer.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["request", "response"] * 5
    assert "never print <redacted>" in lines[1]["choices"][0]["message"]["content"]

    assert {r.headers["authorization"] for r in llm.requests} == {f"Bearer {key}"}
    leaked = [p for p in files_under(Path(run["dir"])) + files_under(home) if key.encode() in p.read_bytes()]
    assert leaked == []
    assert llm.left() == {}


@pytest.mark.slow
def test_ralph_runs_the_standing_task_end_to_end(toy, llm, home):
    llm.add("implementer", *faster_implementer())
    llm.add("judge", PASS)
    llm.add("evaluator", evaluator_reading())
    atelier("run", str(toy), "--policy", "ralph", "--max-rounds", "1", "--no-confirm", home=home, check=True)
    [run] = rows(home, "SELECT * FROM runs")
    [round_] = rows(home, "SELECT * FROM rounds")
    assert run["policy"] == "ralph" and round_["status"] == "accepted"
    assert round_["task"] == "standing task: the target's objective"
    assert "Make `decode.py` produce the same greedy tokens" in llm.to("implementer")[0].text
    log = subprocess.run(["git", "log", "--format=%H %s"], cwd=Path(run["dir"]) / "workspace", capture_output=True)
    assert f"{round_['commit_sha']} round 1: standing task" in log.stdout.decode()
    memory = (Path(run["dir"]) / "memory.md").read_text()
    assert "## Round 1\n\n- accepted (keep keys and values whenever more than one token is decoded): decode_s" in memory
    assert rows(home, "SELECT * FROM issues") == []


def test_an_implementer_that_edits_the_checker_is_failed_before_any_llm_review(baselined, llm):
    here = "HERE = Path(__file__).parent\n"
    llm.add(
        "implementer",
        call("run", command="chmod u+w ../readonly/check.py && echo '# always pass' >> ../readonly/check.py"),
        call("edit", path="decode.py", old=here, new=here + SABOTAGE),
        submit_change("faster decoding", ["decode.py"]),
    )
    llm.add("judge", PASS)
    outcome = play_llm_round(baselined)
    assert outcome.status == "failed"
    assert "readonly/check.py'" in outcome.reason and "No such file or directory" in outcome.reason  # out of sight
    assert readonly.verify(baselined.dir, baselined.manifest) == []
    assert llm.to("implementer")[1].tool_results()[-1].startswith("exit code 1\n")  # the sandbox kept it out
    assert llm.to("judge") == [] and llm.left() == {"judge": 1}
    assert [v["passed"] for v in baselined.store.verdicts(baselined.id, 1)] == [0]


def play_llm_round(run, policy: str = "ralph"):
    """One round of the inner loop with the LLM team, in a run of an LLM policy (so candidates run confined)."""
    run.options.policy = policy
    team = Team()
    team.implementer.bind(run, 1)
    return play(run, 1, Task("faster"), team.implementer, team.reviewer, team.advisor)


def test_the_llm_evaluator_profiles_the_candidate_outside_the_measurement(baselined, llm, capsys):
    baselined.options.policy = "ralph"  # an agent's candidate: it runs confined, under the profiler too
    decode = baselined.workspace.path / "decode.py"
    decode.write_text(decode.read_text().replace(SLOW_PATH, FAST_PATH))
    measured = Measurement("decode_s", [0.5, 0.52], [1.0, 1.02], 0.51, 1.01, 1.98, 0.05, True)
    llm.add("evaluator", call("profile"), evaluator_reading())
    advice = LLMEvaluator(config.require()).advise(baselined, 1, measured, baselined.workspace.diff())
    assert advice == ["bottleneck (decode_s): one forward per token", "compile the step"]
    first, second = llm.to("evaluator")
    assert "## Hardware where the benchmark ran\n\nmachine: " in first.text and f"cores: {os.cpu_count()}" in first.text
    assert "profile" in [t["function"]["name"] for t in first.body["tools"]]
    saved = baselined.dir / "profiles" / "round-1" / "candidate.txt"
    [answer] = second.tool_results()
    assert answer.startswith(f"cProfile (saved as {saved}):\n") and "Ordered by: internal time" in answer
    assert "METRIC" not in answer
    assert saved.read_text().startswith("# cProfile, candidate of round 1\nfull report (mlx): ")
    assert baselined.store.metrics(baselined.id, 1) == []  # the profile is not a measurement
    events = [e["message"] for e in baselined.store.events(baselined.id) if e["kind"] == "profile"]
    assert events == [f"candidate under cProfile: {saved}"]
    assert f"━━ profile: {saved} ━━\n# cProfile" in transcripts.text(baselined.dir, 1)
    assert "profile" not in [t["function"]["name"] for t in schemas.specs("judge")]
    capsys.readouterr()
    assert main(["show", baselined.id]) == 0
    assert f"profiles (the Evaluator's, outside the measured numbers):\n  {saved}\n" in capsys.readouterr().out


def test_a_candidate_that_opens_a_network_connection_is_failed(baselined, llm):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    phone_home = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'outputs')\n"
    here = "HERE = Path(__file__).parent\n"
    llm.add("implementer", call("edit", path="decode.py", old=here, new=here + phone_home), submit_change("x", []))
    llm.add("judge", PASS)
    outcome = play_llm_round(baselined)
    assert outcome.status == "failed"
    assert "ConnectionRefusedError" in outcome.reason, outcome.reason
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
    assert llm.to("judge") == []


def test_an_implementer_that_hard_codes_outputs_is_caught_by_hidden_inputs(baselined, llm):
    public = (baselined.dir / "readonly" / "inputs" / "prompts.json").read_bytes()
    cache = baselined.dir / "cache" / f"reference-{hashlib.sha256(public).hexdigest()[:16]}.json"
    table = dict(zip(map(str, json.loads(public)["prompts"]), json.loads(cache.read_text()), strict=True))
    program = (
        f"import json, sys\nTABLE = {table!r}\nprint(json.dumps({{'ready': True}}), flush=True)\n"
        "for line in sys.stdin:\n    r = json.loads(line)\n    tokens = TABLE.get(str(r['prompt']), [0])\n"
        "    print(json.dumps({'id': r['id'], 'tokens': tokens}), flush=True)\n"
    )
    llm.add(
        "implementer",
        call("run", command="cat ../cache/reference-*.json"),
        call("write", path="decode.py", content=program),
        submit_change("precomputed answers", ["decode.py"]),
    )
    team = Team()
    team.implementer.bind(baselined, 1)
    outcome = play(baselined, 1, Task("faster"), team.implementer, team.reviewer, team.advisor)
    assert outcome.status == "failed" and "hidden case set 1 failed: 2 check(s) failed" in outcome.reason
    assert llm.to("implementer")[1].tool_results()[-1].startswith("exit code 1\n")  # the sandbox kept it out
    assert llm.to("judge") == []


def test_the_llm_judge_rejects_benchmark_special_casing_citing_file_and_line(baselined, llm):
    special = FAST_PATH.replace("max_tokens > 1", 'max_tokens > 1 or "bench" in sys.argv[0]')
    llm.add(
        "implementer",
        call("edit", path="decode.py", old=SLOW_PATH, new=special),
        submit_change("faster decoding", ["decode.py"]),
    )
    line = (baselined.workspace.path / "decode.py").read_text().splitlines().index("    " + SLOW_PATH) + 1
    finding = {"file": "decode.py", "line": line, "evidence": "takes another path when run by the benchmark"}
    llm.add(
        "judge",
        call("submit", verdict="fail", failed_checks=[], reward_hacking_findings=[]),
        call("submit", verdict="fail", failed_checks=[], reward_hacking_findings=[finding | {"line": 999}]),
        call("submit", verdict="fail", failed_checks=["no benchmark special case"], reward_hacking_findings=[finding]),
    )
    team = Team()
    team.implementer.bind(baselined, 1)
    outcome = play(baselined, 1, Task("faster"), team.implementer, team.reviewer, team.advisor)
    assert outcome.status == "failed"
    assert f"decode.py:{line}: takes another path when run by the benchmark" in outcome.reason
    verdicts = baselined.store.verdicts(baselined.id, 1)
    assert [v["passed"] for v in verdicts] == [1, 0]
    assert json.loads(verdicts[1]["reasons"])[0] == "LLM review: reward hacking"
    errors = llm.to("judge")[2].tool_results()
    assert "reward_hacking_findings: [] should be non-empty" in errors[0]
    assert "decode.py:999, but that file has" in errors[1]
    assert llm.to("evaluator") == []


def test_broken_replies_end_their_round_and_a_spent_budget_ends_the_run(baselined, llm, tmp_path, monkeypatch):
    configure(tmp_path, monkeypatch, llm, "max_tokens = 20000\n", timeout_s=1)
    llm.add(
        "implementer",
        raw("read", "{not json"), call("no_such_tool"), call("submit", summary=""),
        submit_change("nothing after all", []),
        raw("read", "{"), raw("read", "[1]"), call("list", path="/"), call("submit"), call("submit"),
        say(""),
        say("I think I am done."),
        status(500), status(500),
        late(3), late(3),
        call("list", tokens=(30000, 10)),
    )  # fmt: skip
    run = baselined
    run.options = Options(max_rounds=20, plateau=20)
    reason = synthesize(run, policies.load("ralph"))
    assert reason.startswith("budget max_tokens spent: ") and reason.endswith(" of 20000 tokens used")
    reasons = [r.reason for r in run.store.rounds(run.id)]
    assert reasons[0] == "implementer: the workspace is unchanged"
    assert reasons[1].startswith("implementer: 4 invalid tool calls; the last: error: invalid arguments: ")
    assert reasons[2:6] == [
        "implementer: the model returned an empty reply",
        "implementer: the model stopped without calling submit; it said: I think I am done.",
        "implementer: the LLM endpoint answered HTTP 500 (2 tries): scripted HTTP 500 for model implementer",
        "implementer: the LLM call timed out after 1 s (2 tries)",
    ]
    assert reasons[6] == f"implementer: {reason}"
    assert {r.status for r in run.store.rounds(run.id)} == {"failed"}
    first = llm.to("implementer")[1:4]
    assert "not valid JSON" in first[0].tool_results()[-1]
    assert "unknown tool 'no_such_tool'" in first[1].tool_results()[-1]
    assert "summary: '' should be non-empty" in first[2].tool_results()[-1]
    assert "outside the workspace" in llm.to("implementer")[7].tool_results()[-1]
    assert llm.left() == {}
    assert run.store.run(run.id).status == "done" and not run.workspace.changed()
    events = [e["message"] for e in run.store.events(run.id) if e["kind"] == "stop"]
    assert events == [reason]
    resumed = reopen(run.id, Store())
    resumed.options = run.options
    assert synthesize(resumed, policies.load("ralph")) == reason and len(resumed.store.rounds(run.id)) == 7


def test_an_orchestrator_that_cannot_answer_fails_the_run_with_one_clear_error(toy, llm, home):
    llm.add("orchestrator", status(500), status(500))
    result = atelier("run", str(toy), home=home)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "atelier: error: the issues policy could not pick the next task: "
        "the LLM endpoint answered HTTP 500 (2 tries): scripted HTTP 500 for model orchestrator"
    )
    [run] = rows(home, "SELECT * FROM runs")
    assert run["status"] == "failed" and run["baseline"] > 0 and rows(home, "SELECT * FROM rounds") == []
    assert [(i["status"], i["source"]) for i in rows(home, "SELECT * FROM issues")] == [("open", "target")]
    [error] = rows(home, "SELECT * FROM events WHERE kind='error'")
    assert error["message"].startswith("the issues policy could not pick the next task")

    llm.add("orchestrator", call("submit", issue_id=1, memory_edits=[], new_issues=[]))
    llm.add("implementer", submit_change("nothing yet", []))
    atelier("resume", run["id"], "--max-rounds", "1", home=home, check=True)
    [round_] = rows(home, "SELECT * FROM rounds")
    assert (round_["task"], round_["status"]) == ("#1 the target's objective", "failed")
    [issue] = rows(home, "SELECT * FROM issues")
    assert (issue["status"], issue["history"]) == ("open", "round 1 failed: implementer: the workspace is unchanged\n")
    assert rows(home, "SELECT status FROM runs")[0]["status"] == "done" and llm.left() == {}


def test_config_names_the_bad_key(tmp_path, monkeypatch, toy, home):
    path = tmp_path / "config.toml"
    cases = {
        '[llm]\nbase_url = "u"\nmodel = "m"\napi_key = "sk-abc"\n': "llm.api_key: an API key is never read",
        '[llm]\nbase_url = "u"\nmodel = "m"\napi_key_env = "sk-abc123"\n': "llm.api_key_env must name an environment",
        '[llm]\nbase_url = "u"\n': "llm.model is missing",
        '[llm]\nbase_url = "u"\nmodel = "m"\n[budget]\nmax_tokens = "lots"\n': "budget.max_tokens must be int, not str",
        '[llm]\nbase_url = "u"\nmodel = "m"\n[roles.judge]\ntoken = "x"\n': "roles.judge.token: an API key is never",
        '[llm]\nbase_url = "u"\nmodel = "m"\n[roles.critic]\nmodel = "x"\n': "roles.critic is not a known key",
        '[llm]\nbase_url = "u"\nmodel = "m"\n[budget]\nmax_cost = 1\n': 'budget.max_cost is set but prices."m"',
    }
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(config.ConfigError, match="^" + re.escape(f"{path}: {message}")):
            config.load()
    result = atelier("run", str(toy), home=home)
    assert result.returncode == 2
    assert result.stderr.strip() == f'atelier: error: {path}: budget.max_cost is set but prices."m" ' + (
        "(the orchestrator's model) is missing"
    )
    path.write_text(
        '[llm]\nbase_url = "u"\nmodel = "m"\napi_key_env = "K"\n[roles.judge]\nmodel = "j"\n'
        '[prices."m"]\ninput = 1\noutput = 3\n[budget]\nmax_minutes = 30\n'
    )
    loaded = config.load()
    assert loaded is not None and loaded.endpoint("judge") == config.Endpoint("u", "j", "K", 2)
    assert loaded.endpoint("implementer").model == "m" and loaded.budget.max_minutes == 30.0
    assert loaded.cost("m", 1_000_000, 1_000_000) == 4.0 and loaded.cost("j", 10, 10) == 0.0
    monkeypatch.setenv("ATELIER_CONFIG", os.devnull)
    assert config.load() is None


def test_file_tools_stay_inside_the_workspace(tmp_path):
    root = tmp_path / "workspace"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("reference outputs")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    (root / "decode.py").write_text("a = 1\nb = 1\n")
    run = SimpleNamespace(target=SimpleNamespace(executor="mlx"))
    tools = Toolbox(run, root)
    for name, args in [("read", {"path": "../secret.txt"}), ("read", {"path": "link"}), ("write", {"path": "/tmp/x"}),
                       ("list", {"path": ".."}), ("search", {"pattern": "x", "path": "link"})]:  # fmt: skip
        with pytest.raises(ToolError, match="outside the workspace"):
            tools.call(name, args | ({"content": ""} if name == "write" else {}))
    with pytest.raises(ToolError, match="found 2 times"):
        tools.call("edit", {"path": "decode.py", "old": " = 1", "new": " = 2"})
    assert tools.call("edit", {"path": "decode.py", "old": "b = 1", "new": "b = 2"}) == "edited decode.py"
    assert tools.call("search", {"pattern": r"= \d"}) == "decode.py:1: a = 1\ndecode.py:2: b = 2"
    assert tools.call("list", {}) == "decode.py"
    assert cut("x" * 20, 5) == "[output cut: the first 15 of 20 characters dropped]\nxxxxx"
    skills = tools.call("list_skills", {})
    assert "metal-mlx-profiling" in skills and "cuda-graphs" not in skills
    with pytest.raises(ToolError, match="no skill 'cuda-graphs' for this target's backend"):
        tools.call("read_skill", {"name": "cuda-graphs"})


def test_redaction_and_budget_messages(tmp_path):
    key = "sk-" + secrets.token_hex(16)
    text = json.dumps({"Authorization": "Bearer abc.def", "note": f"key {key} and sk-other123456 and plainkey1"})
    redacted = Redactor(["plainkey1"])(text)
    for secret in ("abc.def", key, "sk-other123456", "plainkey1"):
        assert secret not in redacted
    store = Store(tmp_path / "a.db")
    run = SimpleNamespace(id="r", store=store)
    store.add_usage("r", 1, "judge", 1, 700, 300, 0.0, 0.25)
    assert budget.spent(run, config.Budget(max_tokens=1001)) is None
    assert budget.spent(run, config.Budget(max_tokens=1000)) == "budget max_tokens spent: 1000 of 1000 tokens used"
    assert budget.spent(run, config.Budget(max_cost=0.2)) == "budget max_cost spent: $0.2500 of $0.2"
    store.start_round("r", 1, "t", {}, "c0")
    store.db.execute("UPDATE rounds SET started = started - 120")
    assert budget.spent(run, config.Budget(max_minutes=1.5)).startswith("budget max_minutes spent: 2.0 of 1.5")


def test_submit_schemas_cap_filed_issues_and_make_a_fail_cite_findings():
    issue = {"title": "t", "detail": ""}
    implementer = jsonschema.Draft202012Validator(schemas.SUBMIT["implementer"])
    base = {"summary": "s", "files_changed": [], "claims": []}
    assert implementer.is_valid(base | {"new_issues": [issue] * schemas.ISSUE_CAP})
    assert not implementer.is_valid(base | {"new_issues": [issue] * (schemas.ISSUE_CAP + 1)})
    judge = jsonschema.Draft202012Validator(schemas.SUBMIT["judge"])
    verdict = {"failed_checks": [], "reward_hacking_findings": []}
    assert judge.is_valid(verdict | {"verdict": "pass"}) and not judge.is_valid(verdict | {"verdict": "fail"})
    finding = {"file": "decode.py", "line": 0, "evidence": "e"}
    assert not judge.is_valid(verdict | {"verdict": "fail", "reward_hacking_findings": [finding]})
    assert judge.is_valid(verdict | {"verdict": "fail", "reward_hacking_findings": [finding | {"line": 3}]})
    assert [t["function"]["name"] for t in schemas.specs("judge")] == [*schemas.READ_ONLY, "submit"]
