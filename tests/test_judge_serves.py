"""The Judge checks what users run: a target whose stack serves the OpenAI API (`api = "openai"`) is also checked
through the server its serve line starts, with the real openai client, streamed and not, from several clients.

The fast tests judge stand-in stacks on json-tiny's real harness (a placeholder model with SmolLM2's tokenizer,
references written to the run's cache): an honest one passes, one whose serve.py is right but whose server answers
differently, or dies once two requests are in flight, is rejected with a `served:` reason. The slow one judges
the json-tiny seed at its defaults on the real weights."""

import io
import json
import os
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomlkit
from test_json_tiny import fake_model

from app.inner import play
from app.judge import judge
from app.loop import finish, next_round
from app.progress import Progress
from app.roles import Change, Task
from app.run import ActiveRun, Options, create
from app.store import Store
from app.target import load
from conftest import ROOT, TARGET
from test_target import errors, write

FAKE_SERVE = """import json, sys
from pathlib import Path
from tokenizers import Tokenizer

setup = json.loads((Path(__file__).parent / "fake.json").read_text())
tokenizer = Tokenizer.from_file(sys.argv[sys.argv.index("--model") + 1] + "/tokenizer.json")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    tokens = setup["by_id"][request["id"]]
    answer = {"tokens": tokens, "text": tokenizer.decode(tokens), "finish_reason": "stop"}
    print(json.dumps({"id": request["id"], **answer}), flush=True)
"""

FAKE_SERVER = """import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tokenizers import Tokenizer

setup = json.loads((Path(__file__).parent / "fake.json").read_text())
tokenizer = Tokenizer.from_file(sys.argv[sys.argv.index("--model") + 1] + "/tokenizer.json")
port = int(sys.argv[sys.argv.index("--port") + 1])
lock, busy = threading.Lock(), [0]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "me"}]})

    def do_POST(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        except ValueError:
            return self.send({"error": {"message": "not JSON", "type": "invalid_request_error"}}, 400)
        with lock:
            busy[0] += 1
            if busy[0] > 1 and setup["mode"] == "dies at once":
                print("two requests at once: giving up", file=sys.stderr, flush=True)
                os._exit(3)
        try:
            time.sleep(0.3)  # long enough for the clients sent together to overlap
            self.answer(body)
        finally:
            with lock:
                busy[0] -= 1

    def answer(self, body):
        tokens = setup["by_user"][body["messages"][-1]["content"]]
        n = min(body.get("max_completion_tokens") or body.get("max_tokens"), len(tokens))
        finish = "stop" if n == len(tokens) else "length"
        head = {"id": "chatcmpl-1", "created": 0, "model": "fake"}
        usage = {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}
        if not body.get("stream"):
            text = tokenizer.decode(tokens[:n])
            if setup["mode"] == "differs":
                text = text.replace(":", ": ")
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return self.send(head | {"object": "chat.completion", "choices": [choice], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        head["object"] = "chat.completion.chunk"
        self.event(head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for k in range(n):
            delta = tokenizer.decode(tokens[: k + 1])[len(tokenizer.decode(tokens[:k])):]
            self.event(head | {"choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]})
        self.event(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self.event(head | {"choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\\n\\n")

    def event(self, message):
        self.wfile.write(f"data: {json.dumps(message)}\\n\\n".encode())
        self.wfile.flush()

    def send(self, message, status=200):
        data = json.dumps(message).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
server.serve_forever()
"""

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["small", "large"]}},
    "required": ["ok", "size"],
    "additionalProperties": False,
}
ANSWERS = {"Is it big?": '{"ok":true,"size":"large"}', "Is it small?": '{"ok":false,"size":"large"}'}


def fake_stack(folder: Path, by_id: dict, by_user: dict, mode: str = "honest") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "serve.py").write_text(FAKE_SERVE)
    (folder / "server.py").write_text(FAKE_SERVER)
    (folder / "fake.json").write_text(json.dumps({"by_id": by_id, "by_user": by_user, "mode": mode}))
    return folder


@pytest.fixture(scope="module")
def fake_world(tmp_path_factory, model_dir, checker):
    """A json-tiny bundle whose seed is an honest stand-in stack, its model a placeholder with SmolLM2's tokenizer,
    two public cases and no hidden set (one checker call per Judge)."""
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("served")
    model = fake_model(root / "model", model_dir)
    bundle = root / "json-tiny"
    shutil.copytree(TARGET, bundle, ignore=shutil.ignore_patterns("__pycache__", "seed", "suite", "hidden"))
    doc = tomlkit.parse((bundle / "target.toml").read_text())
    doc["model"] = {"path": str(model)}
    del doc["readonly"]["hidden"]
    (bundle / "target.toml").write_text(tomlkit.dumps(doc))
    (bundle / "suite").mkdir()
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    by_id, by_user = {}, {}
    for k, (question, text) in enumerate(ANSWERS.items()):
        messages = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": question}]
        case = {"messages": messages, "prompt": "", "schema": SCHEMA, "max_tokens": 32}
        (bundle / "suite" / f"case-{k}.json").write_text(json.dumps(case))
        by_id[f"case-{k}"] = by_user[question] = tokenizer.encode(text, add_special_tokens=False).ids
    fake_stack(bundle / "seed", by_id, by_user)
    return SimpleNamespace(bundle=bundle, model=model, by_id=by_id, by_user=by_user, checker=checker)


@pytest.fixture
def fake_run(fake_world, home, bwrap):
    """A run of the stand-in bundle with the references in its cache, as the checker would have written them."""
    run = create(load(str(fake_world.bundle)), Options(), Store())
    chk = fake_world.checker
    cases = chk.load_cases(run.dir / "readonly" / "suite", run.model)
    references = {}
    for case in cases:
        tokens = fake_world.by_id[case.name]
        references[case.name] = {
            "tokens": tokens,
            "text": ANSWERS[case.messages[-1]["content"]],
            "finish_reason": "stop",
        }
    chk.write_atomic(chk.reference_path(run.model, cases, run.dir / "cache"), json.dumps(references))
    return run


class Swap:
    """An Implementer that makes the stand-in's server misbehave; its serve.py stays right."""

    def __init__(self, world, mode: str):
        self.world, self.mode = world, mode

    def implement(self, task, workspace, feedback) -> Change:
        fake_stack(workspace.path, self.world.by_id, self.world.by_user, self.mode)
        return Change(f"server mode {self.mode}", ["fake.json"])


def round_with(run: ActiveRun, implementer) -> tuple:
    n, start = next_round(run), run.record.best_commit
    run.store.start_round(run.id, n, "served", {}, start)
    outcome = play(run, n, Task("faster serving"), implementer)
    finish(run, n, Task("faster serving"), start, outcome)
    return outcome, run.store.verdicts(run.id, n)


def test_the_judge_passes_an_honest_server_and_rejects_one_that_answers_otherwise(fake_world, fake_run):
    verdict = judge(fake_run, None, fake_run.snapshot(fake_run.workspace.head).path)
    assert verdict.passed, verdict.reasons

    outcome, verdicts = round_with(fake_run, Swap(fake_world, "differs"))
    assert outcome.status == "failed"
    [row] = verdicts
    reasons = json.loads(row["reasons"])
    assert row["role"] == "judge" and not row["passed"]
    assert reasons and all(r.startswith("served: ") for r in reasons), reasons
    assert any("(not streamed, max" in r and "differs from the reference" in r for r in reasons), reasons
    assert not any("(streamed," in r for r in reasons), reasons  # streamed answers stay right in this stand-in
    assert list((fake_run.dir / "calls").iterdir()) == []
    assert leftovers(fake_run.dir) == []


def leftovers(run_dir: Path) -> list[str]:
    """Processes still running in a call's copy of the stack (a server the harness failed to stop)."""
    root, found = run_dir / "calls", []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(root)):
                found.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_text()[:200]!r}")
        except OSError:
            pass
    return found


def test_the_judge_rejects_a_server_that_dies_when_two_requests_overlap(fake_world, fake_run):
    stack = fake_stack(fake_run.dir / "dies", fake_world.by_id, fake_world.by_user, "dies at once")
    verdict = judge(fake_run, None, stack)
    assert not verdict.passed
    assert verdict.reasons[-1].startswith("served: the server exited with code 3: two requests at once"), verdict
    assert all(r.startswith("served: ") for r in verdict.reasons), verdict.reasons
    assert leftovers(fake_run.dir) == []


def test_the_serve_line_reaches_the_checker_as_one_argument(fake_run):
    fake_run.model = fake_run.dir / "a model" / "with spaces"
    [command] = [fake_run.command(fake_run.target.checker.command, fake_run.dir / "stack", fake_run.dir / "in")]
    serve = command[command.index("--serve") + 1]
    assert shlex.split(serve) == [fake_run.executor.python, "server.py", "--model", str(fake_run.model)]


def test_toy_has_no_server_to_check():
    toy = load(str(ROOT / "tests" / "targets" / "toy"))
    assert toy.serve and toy.api == "" and "{serve}" not in toy.checker.command


def test_every_bundled_stack_with_a_server_is_checked_through_it():
    for path in sorted((ROOT / "targets").glob("*/target.toml")):
        target = load(str(path.parent))
        if not (path.parent / target.seed / "server.py").exists():
            assert target.api == "", target.name
            continue
        assert target.api == "openai" and "server.py" in target.serve, target.name
        assert "--serve {serve}" in target.checker.command and "served.py" in target.readonly, target.name
        assert (path.parent / "served.py").resolve() == TARGET / "served.py", target.name


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('serve = "', 'api = "grpc"\nserve = "', "api must be one of 'openai' or absent, not 'grpc'"),
        ('serve = "', 'api = 1\nserve = "', "api must be one of 'openai' or absent, not 1"),
        ('serve = "', 'api = "openai"\nserve = "', "checker.command must pass the server's command as {serve}"),
        ("--cache {cache}\"\ninputs = \"inputs\"", "--cache {cache} --serve {serve}\"\ninputs = \"inputs\"",
         "checker.command uses {serve}, which only a target with api = 'openai' has"),
        ('serve = "{python} decode.py --model {model}"', 'api = "openai"',
         "api = 'openai' needs serve, the command that starts the stack's server"),
        ('--model {model}"\n', '--model {model} --port {port}"\n', "serve uses unknown placeholder {port}"),
        ('serve = "{python} decode.py --model {model}"', "serve = 3", "serve must be a command line (a string)"),
        ("decode.py --model {model}", "decode.py --model '{model}", "serve does not parse"),
    ],
)  # fmt: skip
def test_a_malformed_server_setting_names_the_problem(toy, capsys, old, new, expected):
    write(toy, old, new)
    code, lines = errors(capsys, str(toy))
    assert code == 2 and any(expected in line for line in lines), lines


def test_a_target_with_a_server_validates_when_its_checker_takes_it(toy, capsys):
    write(toy, 'serve = "', 'api = "openai"\nserve = "')
    write(toy, '--cache {cache}"\ninputs = "inputs"', '--cache {cache} --serve {serve}"\ninputs = "inputs"')
    assert errors(capsys, str(toy)) == (0, [])
    assert load(str(toy)).api == "openai"


@pytest.mark.slow
def test_the_json_tiny_seed_at_its_defaults_serves_and_passes_the_judge(tmp_path, home, bwrap, model_dir):
    bundle = tmp_path / "json-tiny"
    shutil.copytree(TARGET, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (bundle / "suite").iterdir():
        if path.name != "review.json":
            path.unlink()
    doc = tomlkit.parse((bundle / "target.toml").read_text())
    del doc["readonly"]["hidden"]
    (bundle / "target.toml").write_text(tomlkit.dumps(doc))
    shutil.copytree(model_dir, home / "models" / model_dir.name)  # converted once per session
    run = create(load(str(bundle)), Options(), Store())
    out = io.StringIO()
    run.progress = Progress(out, live=False, verbose=True)
    verdict = judge(run, None, run.snapshot(run.workspace.head).path)
    assert verdict.passed, verdict.reasons
    assert "CHECK PASS 1 schemas" in out.getvalue() and "and through its server" in out.getvalue(), out.getvalue()


def test_the_server_is_checked_with_the_public_inputs_only(fake_run, monkeypatch):
    """The engine is checked on every set through serve.py; the server once per Judge, with the public inputs."""
    from backends.executor import CommandResult

    fake_run.target.hidden.append("later")
    (fake_run.dir / "hidden" / "later").mkdir(parents=True)
    calls = []

    def execute(template, stack, inputs, timeout):
        command = fake_run.command(template, stack, inputs)
        calls.append((inputs.name, command[command.index("--serve") + 1]))
        return CommandResult(command, 0, "CHECK PASS", 0.1)

    monkeypatch.setattr(fake_run, "execute", execute)
    assert judge(fake_run, None, fake_run.dir / "workspace").passed
    [(public, line), (hidden, nothing)] = calls
    assert (public, hidden, nothing) == ("suite", "later", "")
    assert shlex.split(line)[1:] == ["server.py", "--model", str(fake_run.model)]
