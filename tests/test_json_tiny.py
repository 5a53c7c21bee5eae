"""The json-tiny target on the real SmolLM2-135M weights: conversion, reference, checker, benchmark, seed."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backends import sandbox
from backends.executor import Sandbox
from backends.mlx.gguf import convert
from conftest import TARGET

FAST_KNOBS = {"weights": "fp32", "blas": "openblas"}
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def seed_copy(destination: Path, **knobs) -> Path:
    shutil.copytree(TARGET / "seed", destination, ignore=shutil.ignore_patterns("__pycache__"))
    path = destination / "atelier.knobs.toml"
    table, lines = None, []
    for line in path.read_text().splitlines():
        if line.startswith("["):
            table = line.strip("[]")
        if line.startswith("default =") and table in knobs:
            line = f"default = {json.dumps(knobs[table])}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return destination


def run_tool(script: str, *args: Path | str, bundle: Path = TARGET, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(bundle / script), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def run_check(stack: Path, model: Path, inputs: Path, cache: Path) -> subprocess.CompletedProcess:
    return run_tool("check.py", "--stack", stack, "--model", model, "--inputs", inputs, "--cache", cache)


def one_case_inputs(folder: Path, name: str) -> Path:
    folder.mkdir()
    shutil.copy(TARGET / "suite" / f"{name}.json", folder)
    return folder


def test_convert_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF model file not found: .*missing.gguf"):
        convert(tmp_path / "missing.gguf", tmp_path / "models")


def test_convert_keeps_quantization_and_is_idempotent(gguf_path, models_dir, model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8
    assert config["tie_word_embeddings"] is True
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (model_dir / name).is_file()
    started = time.perf_counter()
    assert convert(gguf_path, models_dir) == model_dir
    assert time.perf_counter() - started < 5
    assert [p.name for p in models_dir.iterdir()] == [model_dir.name]


def test_tokenizer_keeps_the_chat_template(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(PROMPT)
    assert tokenizer.eos_token == "<|im_end|>"


class GgufLlama:
    """A plain numpy llama forward on the GGUF's dequantized tensors, with llama.cpp's rope layout."""

    def __init__(self, path: Path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(path)
        self.tensors = {t.name: dequantize(t.data, t.tensor_type).astype(np.float32) for t in reader.tensors}

        def field(key):
            return reader.fields[key].contents()

        self.layers = field("llama.block_count")
        self.heads = field("llama.attention.head_count")
        self.kv_heads = field("llama.attention.head_count_kv")
        self.eps = field("llama.attention.layer_norm_rms_epsilon")
        self.base = field("llama.rope.freq_base")

    def norm(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.tensors[name]

    def rope(self, x):
        length, _, dim = x.shape
        angles = np.arange(length)[:, None] * self.base ** (-np.arange(0, dim, 2) / dim)
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def attention(self, x, prefix):
        t = self.tensors
        length = x.shape[0]
        q = self.rope((x @ t[f"{prefix}.attn_q.weight"].T).reshape(length, self.heads, -1))
        k = self.rope((x @ t[f"{prefix}.attn_k.weight"].T).reshape(length, self.kv_heads, -1))
        v = (x @ t[f"{prefix}.attn_v.weight"].T).reshape(length, self.kv_heads, -1)
        k, v = (np.repeat(a, self.heads // self.kv_heads, axis=1) for a in (k, v))
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(q.shape[-1])
        scores += np.triu(np.full((length, length), -np.inf), 1)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out = np.einsum("hqk,khd->qhd", weights, v).reshape(length, -1)
        return out @ t[f"{prefix}.attn_output.weight"].T

    def mlp(self, x, prefix):
        t = self.tensors
        gate = x @ t[f"{prefix}.ffn_gate.weight"].T
        up = x @ t[f"{prefix}.ffn_up.weight"].T
        return (gate / (1 + np.exp(-gate)) * up) @ t[f"{prefix}.ffn_down.weight"].T

    def logits(self, tokens: list[int]) -> np.ndarray:
        h = self.tensors["token_embd.weight"][tokens]
        for i in range(self.layers):
            h = h + self.attention(self.norm(h, f"blk.{i}.attn_norm.weight"), f"blk.{i}")
            h = h + self.mlp(self.norm(h, f"blk.{i}.ffn_norm.weight"), f"blk.{i}")
        return self.norm(h, "output_norm.weight")[-1] @ self.tensors["token_embd.weight"].T


@pytest.mark.slow
def test_converted_model_matches_a_numpy_forward_on_the_gguf(gguf_path, model_dir):
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(model_dir))
    straightforward = GgufLlama(gguf_path)
    tokens = tokenizer.encode(PROMPT, add_special_tokens=False)
    generated = []
    for _ in range(6):
        expected = straightforward.logits(tokens + generated)
        got = np.array(model(mx.array([tokens + generated]))[0, -1].astype(mx.float32))
        assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
        assert int(got.argmax()) == int(expected.argmax())
        generated.append(int(expected.argmax()))
    assert "Paris" in tokenizer.decode(generated)


def test_case_prompts_are_the_chat_template_of_their_messages(model_dir, checker):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    for folder in ("suite", "hidden"):
        for case in checker.load_cases(TARGET / folder):
            templated = tokenizer.apply_chat_template(case.messages, tokenize=False, add_generation_prompt=True)
            assert case.prompt == templated, case.name


@pytest.mark.slow
def test_reference_outputs_are_valid_compact_json(reference):
    import jsonschema

    cases, outputs = reference
    for case in cases:
        output = outputs[case.name]
        assert output["finish_reason"] == "stop", case.name
        assert len(output["tokens"]) < case.max_tokens
        jsonschema.validate(json.loads(output["text"]), case.schema)
        assert output["text"] == json.dumps(json.loads(output["text"]), separators=(",", ":"))


@pytest.mark.slow
def test_seed_at_default_knobs_passes_the_check(tmp_path, model_dir, check_cache, reference):
    result = run_check(seed_copy(tmp_path / "seed"), model_dir, TARGET / "suite", check_cache)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "CHECK PASS 3 schemas" in result.stdout


@pytest.mark.slow
def test_seed_with_fast_knobs_passes_the_check_confined(tmp_path, model_dir, check_cache, reference):
    stack = seed_copy(tmp_path / "seed", **FAST_KNOBS)
    env = confined_env(stack, model_dir)
    result = run_tool("check.py", "--stack", stack, "--model", model_dir, "--inputs", TARGET / "suite",
                      "--cache", check_cache, env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "CHECK PASS" in result.stdout


@pytest.mark.slow
def test_check_fails_on_a_tampered_seed(tmp_path, model_dir, check_cache):
    stack = seed_copy(tmp_path / "seed", **FAST_KNOBS)
    engine = stack / "engine.py"
    source = engine.read_text()
    masked = "constraint.masks(self.model.logits(hidden), rows)"
    assert masked in source
    engine.write_text(source.replace(masked, "constraint.masks(-self.model.logits(hidden), rows)"))
    inputs = one_case_inputs(tmp_path / "inputs", "review")
    result = run_check(stack, model_dir, inputs, check_cache)
    assert result.returncode != 0
    assert "CHECK FAIL review:" in result.stdout
    assert "CHECK PASS" not in result.stdout


@pytest.mark.slow
def test_bench_prints_the_headline_metric_and_checks_the_answers(tmp_path, model_dir, check_cache, checker):
    stack = seed_copy(tmp_path / "seed", **FAST_KNOBS)
    inputs = one_case_inputs(tmp_path / "inputs", "review")
    checker.reference_outputs(model_dir, checker.load_cases(inputs, model_dir), check_cache)
    result = run_bench(stack, model_dir, inputs, check_cache)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    metrics = dict(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("METRIC "))
    assert float(metrics["latency_s"]) > 0
    assert float(metrics["tokens_per_s"]) > 0
    assert metrics["checked_outputs"] == "1"


def test_seed_reads_its_knob_defaults(tmp_path):
    stack = seed_copy(tmp_path / "seed", weights="fp32")
    spec = importlib.util.spec_from_file_location("seed_knobs", stack / "knobs.py")
    knobs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(knobs)
    assert knobs.Knobs.read(stack / "atelier.knobs.toml") == knobs.Knobs("fp32", "float16", "bundled")
    broken = tmp_path / "broken.toml"
    broken.write_text((stack / "atelier.knobs.toml").read_text().replace('default = "fp32"', 'default = "fp64"'))
    with pytest.raises(ValueError, match="weights"):
        knobs.Knobs.read(broken)


FAKE_SERVE = """import json, os, sys
from pathlib import Path

here = Path(__file__).parent
setup = json.loads((here / "fake.json").read_text())
seen = {path: os.path.exists(path) for path in setup["probe"]}
(here / "seen.json").write_text(json.dumps(seen | {"HOME": os.environ.get("HOME")}))
sys.stderr.write(setup["stderr"])
if setup["stderr"]:
    sys.exit(1)
print(json.dumps({"ready": True}), flush=True)
for n, line in enumerate(sys.stdin):
    request = json.loads(line)
    with open(here / "requests.log", "a") as log:
        log.write(request["id"] + "\\n")
    answer = dict(setup["answers"].get(request["id"], setup["warmup"]))
    if n >= setup["honest"]:
        answer["tokens"] = [token + 1 for token in answer["tokens"]]
    print(json.dumps({"id": request["id"], **answer}), flush=True)
"""
WARM = {"tokens": [1], "text": "{}", "finish_reason": "stop"}


def fake_stack(folder: Path, answers: dict, honest: int = 1000, probe=(), stderr: str = "") -> Path:
    """A stack replaying answers: the first `honest` requests (the warm-up counts) as given, later ones with other
    tokens; it records the paths of probe it can see in seen.json and the request ids in requests.log. Given
    stderr, it writes that and exits before ready."""
    folder.mkdir()
    (folder / "serve.py").write_text(FAKE_SERVE)
    setup = {"answers": answers, "honest": honest, "probe": [str(p) for p in probe], "stderr": stderr, "warmup": WARM}
    (folder / "fake.json").write_text(json.dumps(setup))
    return folder


def fake_model(folder: Path, model_dir: Path | None = None) -> Path:
    """Placeholder weights beside the model's tokenizer and config (or placeholders of those, for cases without
    messages to render): enough to key the reference cache."""
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    for path in model_dir.iterdir() if model_dir else ():
        if path.suffix != ".safetensors":
            shutil.copy(path, folder)
    (folder / "model.safetensors").write_bytes(b"placeholder weights")
    return folder


def require_sandbox() -> None:
    reason = sandbox.available()
    if reason:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)


def confined_env(stack: Path, *readable: Path) -> dict:
    """This environment with the launch prefix Atelier passes: the stack confined, seeing only readable."""
    require_sandbox()
    return {**os.environ, "ATELIER_CONFINE": json.dumps(sandbox.launcher(Sandbox(stack, readable=readable)))}


@pytest.fixture(scope="module")
def fake(tmp_path_factory, checker):
    """A placeholder model and a cache; inputs(n) writes n cases with their reference outputs in the cache."""
    root = tmp_path_factory.mktemp("fake")
    model, cache = fake_model(root / "model"), root / "cache"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    def inputs(n: int) -> tuple[Path, dict]:
        folder = root / f"inputs-{n}"
        folder.mkdir(exist_ok=True)
        for i in range(n):
            case = {"prompt": f"<|im_start|>user\nCase {i}<|im_end|>\n", "schema": schema, "max_tokens": 16}
            (folder / f"case-{i}.json").write_text(json.dumps(case))
        answers = {
            f"case-{i}": {"tokens": [10 + i, 20], "text": '{"ok":true}', "finish_reason": "stop"} for i in range(n)
        }
        path = checker.reference_path(model, checker.load_cases(folder, model), cache)
        checker.write_atomic(path, json.dumps(answers))
        return folder, answers

    return SimpleNamespace(model=model, cache=cache, inputs=inputs)


def run_bench(stack: Path, model: Path, inputs: Path, cache: Path, env=None) -> subprocess.CompletedProcess:
    return run_tool("bench.py", "--stack", stack, "--model", model, "--inputs", inputs, "--cache", cache, env=env)


def test_bench_fails_a_stack_whose_answers_differ_only_when_benchmarked(tmp_path, fake):
    inputs, answers = fake.inputs(2)
    stack = fake_stack(tmp_path / "stack", answers, honest=2)
    checked = run_check(stack, fake.model, inputs, fake.cache)
    assert checked.returncode == 0 and "CHECK PASS 2 schemas" in checked.stdout, checked.stdout + checked.stderr
    result = run_bench(stack, fake.model, inputs, fake.cache)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(
        r"^CHECK FAIL benchmark: case-[01] differs from the reference: first differing token at position 0: "
        r"candidate 1[12], reference 1[01] \(2 vs 2 tokens\)$", result.stdout, re.MULTILINE
    ), result.stdout  # fmt: skip
    assert "METRIC" not in result.stdout
    empty = run_bench(stack, fake.model, inputs, tmp_path / "empty")
    assert empty.returncode == 1 and empty.stdout.splitlines() == [
        "CHECK FAIL benchmark: no reference outputs in the cache for these inputs (run the checker first)"
    ]


def test_bench_shuffles_its_cases_every_call_and_checks_a_sample(tmp_path, fake):
    inputs, answers = fake.inputs(8)
    stack = fake_stack(tmp_path / "stack", answers)
    for _ in range(2):
        result = run_bench(stack, fake.model, inputs, fake.cache)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "METRIC checked_outputs 2" in result.stdout.splitlines()
    calls = (stack / "requests.log").read_text().split("warmup\n")[1:]
    orders = [call.split() for call in calls]
    assert len(orders) == 2 and all(sorted(order) == sorted(answers) for order in orders)
    assert orders[0] != orders[1]


def test_stack_text_reaches_the_harness_output_only_inside_a_check_fail_line(tmp_path, fake):
    inputs, _ = fake.inputs(2)
    stack = fake_stack(tmp_path / "stack", {}, stderr="broken on purpose\nMETRIC latency_s 0.001\nCHECK PASS forged\n")
    for result in (run_check(stack, fake.model, inputs, fake.cache), run_bench(stack, fake.model, inputs, fake.cache)):
        assert result.returncode == 1
        [line] = result.stdout.splitlines()
        assert line.startswith(("CHECK FAIL stack did not start: ", "CHECK FAIL benchmark: stack exited with code 1"))
        assert "broken on purpose METRIC latency_s 0.001 CHECK PASS forged" in line


def test_a_stack_started_with_the_prefix_sees_neither_inputs_nor_cache(tmp_path, fake):
    inputs, answers = fake.inputs(2)
    stack = fake_stack(tmp_path / "stack", answers, probe=(inputs, fake.cache, TARGET / "check.py"))
    env = confined_env(stack, fake.model)
    checked = run_tool("check.py", "--stack", stack, "--model", fake.model, "--inputs", inputs, "--cache", fake.cache,
                       env=env)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    seen = json.loads((stack / "seen.json").read_text())
    assert seen.pop("HOME") == "/tmp" and seen and not any(seen.values()), seen
