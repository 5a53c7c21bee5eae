"""The json-tiny seed's drafting (jump-forward, prompt lookup), its lossless verification, and its OpenAI server."""

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest
from test_json_tiny import FAST_KNOBS, run_check, seed_copy

from conftest import TARGET

SEED_MODULES = ("blas", "drafts", "engine", "grammar", "knobs", "model", "serve", "server")
NEW_KNOBS = {
    "jump_forward": "on",
    "draft": "prompt",
    "draft_tokens": 4,
    "compile": "on",
    "sparse_head": "on",
    "prompt_cache": "prefix",
}
PROMPT = "<|im_start|>user\nA red Brompton bike, 2019, in good shape.<|im_end|>\n<|im_start|>assistant\n"
SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "used": {"type": "boolean"},
        },
        "required": ["color", "year", "used"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "item": {"type": "object", "properties": {"brand": {"type": "string", "maxLength": 12}}},
            "tags": {"type": "array", "items": {"enum": ["bike", "used", "folding"]}, "maxItems": 3},
        },
        "required": ["item", "tags"],
    },
]
SMALL = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["small", "large"]}},
    "required": ["ok", "size"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def seed():
    path = str(TARGET / "seed")
    sys.path.insert(0, path)
    try:
        import drafts
        import engine
        import grammar
        import model

        yield SimpleNamespace(drafts=drafts, engine=engine, grammar=grammar, model=model)
    finally:
        sys.path.remove(path)
        for name in SEED_MODULES:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def tiny_dir(seed, model_dir, tmp_path_factory) -> Path:  # noqa: F811
    """A small random llama with SmolLM2's tokenizer: fast, and its drafts are often wrong."""
    return random_llama(seed, model_dir, tmp_path_factory.mktemp("tiny-smol"), 3)


@pytest.fixture(scope="module")
def other_tiny_dir(seed, model_dir, tmp_path_factory) -> Path:  # noqa: F811
    return random_llama(seed, model_dir, tmp_path_factory.mktemp("other-tiny-smol"), 4)


def random_llama(seed, model_dir: Path, folder: Path, random_seed: int) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    for path in model_dir.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, folder)
    config = {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    }
    mx.random.seed(random_seed)
    llama = seed.model.Llama(seed.model.ModelConfig(**config))
    mx.eval(llama.parameters())
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(llama.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def tiny(seed, tiny_dir):
    from transformers import AutoTokenizer

    llama = seed.model.load(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    grammars = seed.grammar.Grammars(tokenizer, llama.config.vocab_size)

    def engine(**config):
        return seed.engine.Engine(llama, tokenizer, grammars, seed.engine.EngineConfig(**config))

    return engine


def generate(engine, schema: dict, max_tokens: int = 40):
    return engine.generate(engine_request(schema, max_tokens))


def engine_request(schema: dict, max_tokens: int):
    from engine import Request

    return Request("t", PROMPT, schema, max_tokens)


class Liar:
    """Drafts greedy's own next tokens, then one the grammar allows but greedy would not emit."""

    def __init__(self, truth: list[int], vocab_size: int):
        self.truth = truth
        self.vocab_size = vocab_size
        self.max_tokens = 4

    def start(self, prompt: str, ids: list[int]) -> None:
        pass

    def propose(self, constraint, output: list[int], room: int):
        import xgrammar as xgr
        from drafts import Draft

        start = len(output)
        right = self.truth[start : start + len(output) % 3]
        fork = constraint.matcher.fork()
        for token in right:
            assert fork.accept_token(token)
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        fork.fill_next_token_bitmask(bitmask)
        allowed = np.flatnonzero(np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little"))
        truth = self.truth[start + len(right)] if start + len(right) < len(self.truth) else None
        wrong = [int(t) for t in allowed if t != truth and t not in constraint.stop_tokens][:1]
        return Draft((right + wrong)[:room])


def test_wrong_drafts_are_rolled_back_and_the_output_is_constrained_greedy(tiny):
    plain = tiny()
    for schema in SCHEMAS:
        expected = generate(plain, schema)
        liar = tiny(draft_tokens=4)
        liar.drafter = Liar(expected.tokens, 49152)
        constraint = liar.constraint(schema)
        shadow = liar.constraint(schema)
        tokens, finish_reason = [], None
        for new, finish in liar.stream(PROMPT, constraint, 40):
            tokens, finish_reason = tokens + new, finish
            for token in new:
                shadow.accept(token)
            assert constraint.forced() == shadow.forced()
            constraint.matcher.fill_next_token_bitmask(constraint.bitmask)
            shadow.matcher.fill_next_token_bitmask(shadow.bitmask)
            assert np.array_equal(constraint.bitmask[:1].numpy(), shadow.bitmask[:1].numpy())
        assert (tokens, finish_reason) == (expected.tokens, expected.finish_reason)
        assert liar.stats.drafted > liar.stats.accepted > 0
        assert liar.stats.forwards < len(tokens) + 1


def output(result) -> tuple:
    return result.tokens, result.text, result.finish_reason


CONFIGS = [
    {"jump_forward": True},
    {"draft_tokens": 4},
    {"jump_forward": True, "draft_tokens": 8},
    {"sparse_head": 8192, "jump_forward": True},
    {"prompt_cache": True, "prefill_step_size": 16},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "+".join(c))
def test_drafting_and_engine_knobs_are_token_identical_to_one_token_steps(tiny, config):
    plain, drafting = tiny(), tiny(**config)
    for schema in [*SCHEMAS, SMALL]:
        for max_tokens in (40, 7):
            assert output(generate(drafting, schema, max_tokens)) == output(generate(plain, schema, max_tokens))
    if config.get("jump_forward"):
        assert drafting.stats.forwards < plain.stats.forwards
        assert 0 < drafting.stats.jump_forward <= drafting.stats.accepted


def test_sparse_head_computes_only_the_allowed_rows(seed, tiny):
    engine = tiny(sparse_head=8192)
    constraint = engine.constraint(SMALL)
    constraint.fill()
    allowed = constraint.allowed(1)
    assert 0 < len(allowed) < 100
    hidden = engine.model.hidden(engine_ids(engine), engine.model.make_caches())[0, -1:]
    full = np.array(engine.model.logits(hidden))[0, allowed]
    sparse = np.array(engine.model.logits_for(hidden, seed.engine.mx.array(allowed)))[0]
    np.testing.assert_allclose(sparse, full, rtol=1e-5, atol=1e-5)


def engine_ids(engine):
    import mlx.core as mx

    return mx.array([engine.tokenizer.encode(PROMPT, add_special_tokens=False)])


def test_prompt_cache_reuses_the_shared_prefix(tiny):
    for reuse in (True, False):
        engine = tiny(prompt_cache=reuse)
        first = generate(engine, SMALL)
        caches = engine.caches
        assert output(generate(engine, SMALL)) == output(first)
        assert (engine.caches is caches) == reuse


def test_draft_model_rejections_keep_the_grammar_in_step(seed, tiny, tiny_dir, other_tiny_dir):
    plain = tiny()
    for folder, rejects in ((tiny_dir, False), (other_tiny_dir, True)):
        drafter = seed.drafts.ModelDrafter(seed.model.load(folder), 4, 2048)
        speculative = tiny(draft_tokens=4)
        speculative.drafter = drafter
        for schema in [*SCHEMAS, SMALL]:
            for max_tokens in (40, 7):
                assert output(generate(speculative, schema, max_tokens)) == output(generate(plain, schema, max_tokens))
        stats = speculative.stats
        assert stats.accepted > 0 and stats.forwards < plain.stats.forwards
        assert (stats.drafted > stats.accepted) == rejects


def test_quantized_kv_cache_still_gives_schema_valid_json(tiny):
    for bits in (8, 4):
        result = generate(tiny(kv_bits=bits), SMALL)
        assert result.finish_reason == "stop"
        jsonschema.validate(json.loads(result.text), SMALL)


def test_jump_forward_drafts_the_forced_text(seed, tiny):
    engine = tiny(jump_forward=True)
    constraint = engine.constraint(SMALL)
    engine.drafter.start(PROMPT, [])
    draft = engine.drafter.propose(constraint, [], 10)
    assert engine.tokenizer.decode(draft.tokens) == '{"ok":'
    assert draft.forced == len(draft.tokens)
    assert engine.drafter.propose(constraint, [], 2).tokens == draft.tokens[:2]
    lookup = tiny(draft_tokens=2)
    lookup.drafter.start(PROMPT, [])
    output = lookup.tokenizer.encode('{"brand":"Brompton', add_special_tokens=False)
    draft = lookup.drafter.propose(lookup.constraint(SCHEMAS[1]), output, 10)
    assert lookup.tokenizer.decode(draft.tokens) == " bike,"
    assert draft.forced == 0


def test_prompt_lookup_continues_the_latest_repeat(seed):
    lookup = seed.drafts.lookup
    assert lookup("Dune, Frank Herbert, 1965. ... Frank", 8) == " Herbert"
    assert lookup("no repeat here", 8) == ""
    assert lookup("abcd-1 abcd-2 abcd", 3) == "-2 "


@pytest.fixture(scope="module")
def tiny_server(tiny_dir, tmp_path_factory):
    stack = seed_copy(tmp_path_factory.mktemp("server") / "seed", jump_forward="on", draft="prompt")
    process = subprocess.Popen(
        [sys.executable, str(stack / "server.py"), "--model", str(tiny_dir), "--port", "0"],
        cwd=stack,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{ready_port(process)}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def ready_port(process: subprocess.Popen) -> int:
    for line in process.stdout:
        if line.startswith("{"):
            message = json.loads(line)
            if message.get("ready"):
                return message["port"]
    raise RuntimeError(f"server exited with code {process.wait()}")


def response_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def ask(client, schema: dict, stream: bool = False, max_tokens: int = 64):
    messages = [{"role": "user", "content": "Is it small?"}]
    reply = client.chat.completions.create(
        model="seed", messages=messages, response_format=response_format(schema), max_tokens=max_tokens, stream=stream
    )
    if not stream:
        return reply.choices[0].message.content, reply.choices[0].finish_reason
    content, finish_reason = "", None
    for chunk in reply:
        content += chunk.choices[0].delta.content or ""
        finish_reason = chunk.choices[0].finish_reason or finish_reason
    return content, finish_reason


def test_server_answers_the_openai_client_streamed_and_not(tiny_server):
    from openai import OpenAI

    client = OpenAI(base_url=tiny_server, api_key="none", max_retries=0)
    plain, streamed = ask(client, SMALL), ask(client, SMALL, stream=True)
    assert plain == streamed
    assert plain[1] == "stop"
    jsonschema.validate(json.loads(plain[0]), SMALL)
    assert [model.id for model in client.models.list()]


def post(url: str, body: bytes | str) -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_reports_bad_requests_and_keeps_serving(tiny_server):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=tiny_server, api_key="none", max_retries=0)
    bad = {
        "malformed": (b'{"messages": [', "not valid JSON"),
        "no schema": (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "response_format"),
        "bad schema": (
            json.dumps(
                {
                    "messages": [{"role": "user", "content": "hi"}],
                    "response_format": response_format({"type": "string", "pattern": "(["}),
                }
            ),
            "could not be compiled: Regex parsing error",
        ),
    }
    for name, (body, reason) in bad.items():
        status, reply = post(f"{tiny_server}/chat/completions", body)
        assert status == 400, name
        error = reply["error"]
        assert error["type"] == "invalid_request_error"
        assert reason in error["message"], (name, error)
        assert ask(client, SMALL)[1] == "stop"
    with pytest.raises(BadRequestError, match="Unsupported type"):
        ask(client, {"type": "nonsense"})
    for stream in (False, True):
        content, finish_reason = ask(client, SMALL, stream=stream, max_tokens=3)
        assert finish_reason == "length"
        assert content.startswith('{"ok')
    assert post(f"{tiny_server}/nowhere", b"{}")[0] == 404
    assert ask(client, SMALL)[1] == "stop"


@pytest.mark.slow
def test_seed_with_every_new_knob_passes_the_check(tmp_path, model_dir, check_cache, reference):  # noqa: F811
    stack = seed_copy(tmp_path / "seed", **FAST_KNOBS, **NEW_KNOBS)
    result = run_check(stack, model_dir, TARGET / "suite", check_cache)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "CHECK PASS 3 schemas" in result.stdout


@pytest.mark.slow
def test_server_on_real_weights_returns_the_reference(tmp_path, model_dir, reference):  # noqa: F811
    from openai import OpenAI

    cases, outputs = reference
    stack = seed_copy(tmp_path / "seed", **FAST_KNOBS, **NEW_KNOBS)
    command = [sys.executable, str(stack / "server.py"), "--model", str(model_dir), "--port", "0"]
    process = subprocess.Popen(command, cwd=stack, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{ready_port(process)}/v1", api_key="none", max_retries=0)
        for case in cases[:2]:
            for stream in (False, True):
                started = time.perf_counter()
                reply = client.chat.completions.create(
                    model="seed",
                    messages=case.messages,
                    response_format=response_format(case.schema),
                    max_tokens=case.max_tokens,
                    stream=stream,
                )
                chunks = reply if stream else [reply]
                content = "".join(
                    (c.choices[0].delta.content or "") if stream else c.choices[0].message.content for c in chunks
                )
                assert content == outputs[case.name]["text"], (case.name, stream, time.perf_counter() - started)
                jsonschema.validate(json.loads(content), case.schema)
    finally:
        process.terminate()
        process.wait(timeout=30)
