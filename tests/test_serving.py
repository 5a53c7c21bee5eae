"""The bundled OpenAI servers under concurrent clients, through the real `openai` client: the json-tiny seed on real
SmolLM2 weights with its prompt cache (issue 15: requests after the first failed with `There is no Stream(cpu, N) in
current thread`), clients that disconnect, OpenAI conformance, and the predicted-outputs servers with a prediction."""

import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_json_tiny import FAST_KNOBS, seed_copy

from app import knobs
from conftest import ROOT, TARGET

DEMO_KNOBS = FAST_KNOBS | {"prompt_cache": "prefix", "jump_forward": "on", "draft": "prompt", "draft_tokens": 2,
                           "sparse_head": "on", "compile": "on"}  # fmt: skip
SMALL = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "used": {"type": "boolean"}},
    "required": ["color", "used"],
    "additionalProperties": False,
}
FREE = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}
ASK = [{"role": "user", "content": "A red Brompton bike from 2019, used."}]
# A schema case whose answer ends by the grammar after 42 tokens: on the threaded server of before, every request
# that came after it failed, since its KV cache (the prompt cache) was left to be evaluated by another thread.
CASES = [("02-contact-card", 60), ("03-product-listing", 6), ("21-geo-point", 6), ("23-bookmark", 6)]


class Served:
    """A seed's server.py on 127.0.0.1 (port 0), its stderr in a log file."""

    def __init__(self, stack: Path, model: Path, log: Path, *options: str):
        command = [sys.executable, str(stack / "server.py"), "--model", str(model), "--port", "0", *options]
        self.log = log
        with log.open("w") as sink:
            self.process = subprocess.Popen(command, cwd=stack, stdout=subprocess.PIPE, stderr=sink, text=True)
        self.port = ready_port(self.process, log)
        self.base = f"http://127.0.0.1:{self.port}/v1"

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.base, api_key="none", max_retries=0, timeout=120)

    def wait_for_log(self, text: str, times: int = 1, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (log := self.log.read_text()).count(text) >= times:
                return log
            time.sleep(0.2)
        raise AssertionError(f"the server never logged {text!r}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def ready_port(process: subprocess.Popen, log: Path) -> int:
    for line in process.stdout:
        if line.startswith("{") and json.loads(line).get("ready"):
            return json.loads(line)["port"]
    raise RuntimeError(f"server exited with code {process.wait()}: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def json_server(model_dir, tmp_path_factory):
    """The json-tiny seed with the demo's best knobs: fp32, OpenBLAS, prompt cache, jump-forward, prompt lookup 2,
    sparse head, compiled blocks."""
    folder = tmp_path_factory.mktemp("json-server")
    server = Served(seed_copy(folder / "seed", **DEMO_KNOBS), model_dir, folder / "server.log", "--deadline", "60")
    yield server
    server.stop()


def chat(client, messages: list, stream: bool = False, **fields) -> tuple[str, str, object]:
    """(content, finish_reason, usage) of one chat completion, streamed or not."""
    reply = client.chat.completions.create(model="seed", messages=messages, stream=stream, **fields)
    if not stream:
        return reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage
    content, finish_reason, usage = "", None, None
    for chunk in reply:
        usage = chunk.usage or usage
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
            finish_reason = chunk.choices[0].finish_reason or finish_reason
    return content, finish_reason, usage


def json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def ask_case(client, name: str, max_tokens: int, stream: bool) -> tuple[str, str]:
    case = json.loads((TARGET / "schemas" / f"{name}.json").read_text())
    content, finish_reason, _ = chat(client, case["messages"], stream, max_tokens=max_tokens,
                                     response_format=json_schema(case["schema"]))  # fmt: skip
    return content, finish_reason


def test_the_request_after_an_answer_the_grammar_ended_is_answered(json_server):
    client = json_server.client()
    assert ask_case(client, *CASES[0], stream=False)[1] == "stop"
    assert ask_case(client, *CASES[2], stream=True)[0].startswith("{")


@pytest.mark.slow
def test_prompt_cache_stack_answers_four_concurrent_clients_as_it_answers_one(json_server):
    alone = {case: ask_case(json_server.client(), *case, stream=False) for case in CASES}
    assert alone[CASES[0]][1] == "stop" and json.loads(alone[CASES[0]][0])

    def client_session(first: int) -> list:
        mine = [CASES[first], CASES[(first + 1) % len(CASES)]]
        return [ask_case(json_server.client(), *case, stream=i == first % 2) for i, case in enumerate(mine)]

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(client_session, range(4)))
    assert together == [[alone[CASES[i]], alone[CASES[(i + 1) % len(CASES)]]] for i in range(4)]
    assert "Traceback" not in json_server.log.read_text()


def test_a_client_that_leaves_is_abandoned_and_the_others_are_served(json_server):
    client = json_server.client()
    expected = chat(client, ASK, max_tokens=8, response_format=json_schema(SMALL))[:2]
    leaving = client.chat.completions.create(model="seed", messages=ASK, max_tokens=200, stream=True,
                                             response_format=json_schema(FREE))  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(chat, json_server.client(), ASK, max_tokens=8, response_format=json_schema(SMALL))
        for _ in zip(range(3), leaving, strict=False):
            pass
        leaving.close()
        log = json_server.wait_for_log("abandoned after")
        assert other.result()[:2] == expected
    tokens = int(log.split("abandoned after ")[1].split()[0])
    assert tokens < 200
    with socket.create_connection(("127.0.0.1", json_server.port)) as raw:  # not streamed, and gone at once
        body = json.dumps({"messages": ASK, "max_tokens": 200, "response_format": json_schema(FREE)}).encode()
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip
    json_server.wait_for_log("abandoned", times=2, timeout=180)  # behind an uninterruptible prefill on a busy box
    assert chat(client, ASK, stream=True, max_tokens=8, response_format=json_schema(SMALL))[:2] == expected


def body(**fields) -> dict:
    return {"messages": ASK, "response_format": json_schema(SMALL), "max_tokens": 4} | fields


REFUSED = {  # name: (request, the field named, words of the message)
    "n": (body(n=2), "n", "one choice"),
    "tools": (body(tools=[{"type": "function", "function": {"name": "f"}}]), "tools", "not supported"),
    "tool_choice": (body(tool_choice="auto"), "tool_choice", "not supported"),
    "functions": (body(functions=[{"name": "f"}]), "functions", "not supported"),
    "logprobs": (body(logprobs=True), "logprobs", "not returned"),
    "sampling": (body(temperature=0.7), "temperature", "temperature must be 0"),
    "unknown field": (body(best_of=3), "best_of", "not supported"),
    "bad schema": (body(response_format=json_schema({"type": "string", "pattern": "(["})), "response_format",
                   "could not be compiled"),
    "no response_format": ({"messages": ASK}, "response_format", "json_object"),
    "no messages": ({"response_format": json_schema(SMALL)}, "messages", "non-empty"),
    "bad message": (body(messages=[{"role": "user"}]), "messages[0]", "content"),
    "max_tokens 0": (body(max_tokens=0), "max_tokens", "positive"),
    "stop list": (body(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
    "prompt too long": (body(messages=[{"role": "user", "content": "word " * 9000}]), "messages", "context of 8192"),
    "max_tokens past the context": (body(max_completion_tokens=9000), "messages", "plus max_tokens 9000"),
}  # fmt: skip


def post(base: str, path: str, data: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_unsupported_and_invalid_requests_are_400s_naming_the_field(json_server):
    for name, (fields, param, words) in REFUSED.items():
        status, reply = post(json_server.base, "/chat/completions", json.dumps(fields).encode())
        assert status == 400, (name, reply)
        assert set(reply["error"]) == {"message", "type", "param", "code"}, name
        assert reply["error"]["param"] == param and reply["error"]["type"] == "invalid_request_error", (name, reply)
        assert words in reply["error"]["message"], (name, reply)
    for data in (b'{"messages": [', b"[1, 2]", b"\xff\xfe"):
        assert post(json_server.base, "/chat/completions", data)[0] == 400
    assert post(json_server.base, "/nowhere", b"{}")[0] == 404
    assert "Traceback" not in json_server.log.read_text()


def test_json_object_stop_usage_and_models_follow_openai(json_server, model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    client = json_server.client()
    content, finish, usage = chat(client, ASK, max_tokens=16, response_format=json_schema(SMALL))
    prompt = tokenizer.apply_chat_template(ASK, tokenize=False, add_generation_prompt=True)
    assert finish == "stop" and usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert usage.completion_tokens >= len(
        tokenizer.encode(content, add_special_tokens=False)
    )  # as the grammar split it
    streamed = chat(client, ASK, True, max_tokens=16, response_format=json_schema(SMALL),
                    stream_options={"include_usage": True})  # fmt: skip
    assert streamed[:2] == (content, finish) and streamed[2].completion_tokens == usage.completion_tokens
    cut = content.index(",")
    for stream in (False, True):
        stopped = chat(client, ASK, stream, max_tokens=16, response_format=json_schema(SMALL), stop=[",", "}}"])
        assert stopped[:2] == (content[:cut], "stop")
        short = chat(client, ASK, stream, max_completion_tokens=3, response_format=json_schema(SMALL))
        assert short[1] == "length" and content.startswith(short[0]) and (stream or short[2].completion_tokens == 3)
    anything = chat(client, ASK, max_tokens=16, response_format={"type": "json_object"})
    assert anything[1] == "length" or isinstance(json.loads(anything[0]), dict)
    assert [model.id for model in client.models.list()] == [model_dir.name]


def tiny_hf_llama(model_dir: Path, folder: Path) -> Path:
    """A small random llama in Hugging Face's layout with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=2, bos_token_id=1,
                         tie_word_embeddings=True, initializer_range=0.5)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    for path in model_dir.iterdir():
        if path.name.startswith(("tokenizer", "chat_template")):
            shutil.copy(path, folder)
    return folder


def tiny_mlx_llama(model_dir: Path, folder: Path) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.models import llama

    for path in model_dir.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, folder)
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": 49152,
              "tie_word_embeddings": True, "eos_token_id": 2}  # fmt: skip
    mx.random.seed(5)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.update(tree_map(lambda weight: weight * 8, model.parameters()))  # greedy then varies its tokens
    mx.eval(model.parameters())
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("bundle", ["predicted-outputs-tiny", "predicted-outputs-mlx"])
def test_predicted_outputs_servers_answer_concurrent_clients_with_a_prediction(bundle, model_dir, tmp_path):
    make = tiny_mlx_llama if bundle.endswith("mlx") else tiny_hf_llama
    (tmp_path / "model").mkdir()
    model = make(model_dir, tmp_path / "model")
    stack = tmp_path / "seed"
    shutil.copytree(ROOT / "targets" / bundle / "seed", stack, ignore=shutil.ignore_patterns("__pycache__"))
    knobs.set_default(stack, "predicted", "on")
    server = Served(stack, model, tmp_path / "server.log")
    try:
        questions = [[{"role": "user", "content": f"Repeat: the cat sat on mat {i}."}] for i in range(3)]
        plain = [chat(server.client(), q, max_tokens=10) for q in questions]

        def predicted(i: int):
            prediction = {"type": "content", "content": plain[i][0]}
            return chat(server.client(), questions[i], i % 2 == 1, max_tokens=10, prediction=prediction,
                        stream_options={"include_usage": True} if i % 2 else None)  # fmt: skip

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(predicted, range(3)))
        assert [a[:2] for a in answers] == [p[:2] for p in plain]
        assert all(a[2].completion_tokens_details.accepted_prediction_tokens > 0 for a in answers)
        assert all(a[2].completion_tokens == p[2].completion_tokens for a, p in zip(answers, plain, strict=True))
        status, reply = post(server.base, "/chat/completions", json.dumps({"messages": questions[0], "n": 2}).encode())
        assert status == 400 and reply["error"]["param"] == "n"
    finally:
        server.stop()


def test_llama_server_refuses_what_it_cannot_serve_stops_at_stop_strings_and_keeps_deadlines(tmp_path, monkeypatch):
    from test_llama_serving import make_tiny_llama

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    model = make_tiny_llama(tmp_path / "model")
    server = Served(ROOT / "targets" / "llama-h100-tiny" / "seed", model, tmp_path / "server.log", "--deadline", "0.5")
    try:
        client = server.client()
        say = [{"role": "user", "content": "Say something."}]
        text = chat(client, say, max_tokens=12, extra_body={"ignore_eos": True})[0]
        stop = text[4:6]
        for stream in (False, True):
            assert chat(client, say, stream, max_tokens=12, stop=stop)[:2] == (text[: text.index(stop)], "stop")
        refused = {
            "n": {"n": 2},
            "tools": {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "logprobs": {"logprobs": True},
            "response_format": {"response_format": {"type": "json_object"}},
            "best_of": {"best_of": 2},
            "messages": {"messages": [{"role": "user", "content": "x" * 600}]},
        }
        for param, fields in refused.items():
            status, reply = post(server.base, "/chat/completions", json.dumps({"messages": say} | fields).encode())
            assert status == 400 and reply["error"]["param"] == param, (param, reply)
        long = {"messages": say, "max_tokens": 470, "extra_body": {"ignore_eos": True}}
        with ThreadPoolExecutor(4) as pool:  # one at a time (max_batch 1): the later ones pass their deadline
            answers = list(pool.map(lambda _: chat(server.client(), **long), range(4)))
        assert all(finish == "length" for _, finish, _ in answers)
        assert min(usage.completion_tokens for _, _, usage in answers) < 470
    finally:
        server.stop()
