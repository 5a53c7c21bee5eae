"""The predicted-outputs targets: the seed's verified decoding, the checker, the bundles, and a run over SSH."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_json_tiny import fake_model, fake_stack, require_sandbox

from app.bench import predictedbench
from app.bench.jsonbench import Tuned
from app.target import check
from backends import hf
from conftest import ROOT, atelier, rows
from sshd import configure

TINY = ROOT / "targets" / "predicted-outputs-tiny"
SEED = TINY / "seed"
sys.path[:0] = [str(SEED)]
from engine import Engine, EngineConfig, Stats, load, stop_tokens  # noqa: E402
from prediction import Prediction  # noqa: E402

KS = (1, 4, 16)
REALIGN = {"partial": (True, False), "longer": (False,)}


class Words:
    """A tokenizer for token ids written as text: "5 17 3"."""

    eos_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(word) for word in text.split()]

    def decode(self, tokens: list[int]) -> str:
        return " ".join(map(str, tokens))


@pytest.fixture(scope="module")
def synthetic():
    """A tiny llama with fixed-seed random weights, and its plain greedy output for a prompt."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=0)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    prompt = [5, 17, 3, 42, 8, 91, 23, 17, 3]
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                             eos_token_id=0, pad_token_id=0)  # fmt: skip
    plain = [t for t in out[0, len(prompt) :].tolist()]
    return model, " ".join(map(str, prompt)), plain


def decode(model, tokenizer, prompt: str, prediction: str, k: int, realign: bool, max_tokens: int) -> tuple:
    stops = stop_tokens(model, tokenizer)
    engine = Engine(model, tokenizer, stops, EngineConfig(predicted=True, k=k, realign=realign))
    stats, tokens = Stats(), []
    for new, _ in engine.stream(prompt, prediction, max_tokens, stats):
        tokens += new
    return tokens, stats


def predictions(plain: list[int], vocab: int) -> dict[str, list[int]]:
    half = len(plain) // 2
    return {
        "exact": plain,
        "wrong": [(t + 1) % vocab or 1 for t in plain],
        "partial": plain[:half] + [(t + 7) % vocab or 1 for t in plain[half : half + 3]] + plain[half + 3 :],
        "longer": plain + plain,
        "empty": [],
    }


def test_prediction_follows_the_output_and_realigns_on_an_ngram():
    p = Prediction([1, 2, 3, 4, 5, 6, 7, 8], realign=True)
    assert p.draft([], 3) == [1, 2, 3]
    for token in (1, 2, 9):
        p.follow(token)
    assert p.at is None and p.draft([1, 2, 9], 4) == []
    assert p.draft([9, 3, 4, 5], 2) == [6, 7]
    off = Prediction([1, 2, 3, 4, 5, 6], realign=False)
    off.follow(9)
    assert off.draft([9, 3, 4, 5], 2) == []
    assert Prediction([], realign=True).draft([1, 2, 3], 4) == []


def test_predicted_decoding_is_token_identical_to_generate_on_a_synthetic_model(synthetic):
    model, prompt, plain = synthetic
    assert len(set(plain)) > 3
    for name, tokens in predictions(plain, 96).items():
        for k in KS:
            for realign in REALIGN.get(name, (True,)):
                got, stats = decode(model, Words(), prompt, " ".join(map(str, tokens)), k, realign, len(plain))
                assert got == plain, (name, k, realign)
                if name == "exact" and k > 1:
                    assert stats.forwards == 1 + -(-(len(plain) - 1) // (k + 1))
                if name in ("wrong", "empty"):
                    assert stats.accepted == 0


def test_both_bundles_validate():
    for name in ("predicted-outputs-tiny", "predicted-outputs-h100"):
        problems, target = check(ROOT / "targets" / name)
        assert problems == [] and target is not None
    assert target.executor == "cuda_remote" and target.model.hub == "Qwen/Qwen3-32B"
    assert target.model.draft == {"hub": "Qwen/Qwen3-0.6B"}


@pytest.fixture(scope="module")
def smollm2(gguf_path, models_dir) -> Path:
    return hf.prepare_model(gguf_path, models_dir)


@pytest.mark.slow
def test_seed_is_token_identical_to_greedy_on_smollm2(smollm2):
    import torch

    sys.path.insert(0, str(TINY))
    from reference.generate import Reference
    from workload import load_cases

    torch.set_num_threads(2)
    [case] = [c for c in load_cases(TINY / "suite", smollm2) if c.name == "recipe"]
    expected = Reference(smollm2).generate(case.prompt, 48)["tokens"]
    model, tokenizer = load(smollm2, "auto", "sdpa")
    file = case.prediction
    variants = {"file": file, "wrong": file.upper()[::-1], "partial": file[: len(file) // 3] + " Waffles." + file[-40:],
                "empty": ""}  # fmt: skip
    for name, prediction in variants.items():
        got, stats = decode(model, tokenizer, case.prompt, prediction, 8, True, 48)
        assert got == expected, name
        if name == "file":
            assert stats.accepted > len(expected) / 2


def checker(stack: Path, model: Path, inputs: Path, cache: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(TINY / "check.py"), "--stack", str(stack), "--model", str(model),
               "--inputs", str(inputs), "--cache", str(cache)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def harness(script: str, stack: Path, model: Path, inputs: Path, cache: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(TINY / script), "--stack", str(stack), "--model", str(model),
               "--inputs", str(inputs), "--cache", str(cache)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def test_bench_fails_a_stack_whose_answers_differ_only_when_benchmarked(tmp_path, model_dir):
    spec = importlib.util.spec_from_file_location("predicted_check", TINY / "check.py")
    check_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_module)
    model, inputs = fake_model(tmp_path / "model", model_dir), tmp_path / "inputs"
    inputs.mkdir()
    answers = {}
    for i in range(2):
        case = {"instruction": f"Fix the typo {i}.", "file": f"Helo {i}", "lang": "", "max_tokens": 8}
        (inputs / f"case-{i}.json").write_text(json.dumps(case))
        answers[f"case-{i}"] = {"tokens": [30 + i, 40], "text": f"Hello {i}", "finish_reason": "stop"}
    path = check_module.reference_path(model, check_module.load_cases(inputs, model), tmp_path / "cache")
    check_module.write_atomic(path, json.dumps({k: v | {"prediction_tokens": [30, 41]} for k, v in answers.items()}))
    stack = fake_stack(tmp_path / "stack", answers, honest=2)
    checked = harness("check.py", stack, model, inputs, tmp_path / "cache")
    assert checked.returncode == 0 and "CHECK PASS 2 cases" in checked.stdout, checked.stdout + checked.stderr
    result = harness("bench.py", stack, model, inputs, tmp_path / "cache")
    assert result.returncode == 1 and "METRIC" not in result.stdout, result.stdout + result.stderr
    assert re.search(r"^CHECK FAIL benchmark: case-[01] differs from the reference: first differing token at "
                     r"position 0", result.stdout, re.MULTILINE), result.stdout  # fmt: skip


def test_bench_runs_the_stacks_confined_and_the_transformers_rows_plainly(tmp_path):
    require_sandbox()
    model, draft, scratch = tmp_path / "model", tmp_path / "draft", tmp_path / "scratch"
    for folder in (model, draft, scratch):
        folder.mkdir()
    args = SimpleNamespace(rows="plain,lookup,draft,seed,predicted", lookup=10, threads=2)
    stack = Tuned(SEED, "the seed", {})
    rows = {r.key: r for r in predictedbench.build_rows(args, TINY, stack, model, draft, scratch)}
    assert [k for k, r in rows.items() if r.env] == ["seed", "predicted"]
    for row in (rows["seed"], rows["predicted"]):
        prefix = json.loads(row.env["ATELIER_CONFINE"])
        assert row.cwd.parent == scratch and str(row.cwd) in prefix and str(SEED) not in prefix
        assert ["--ro-bind", str(draft), str(draft)] == prefix[prefix.index(str(draft)) - 1 :][:3]


@pytest.mark.slow
def test_checker_rejects_a_bf16_stack_and_one_that_echoes_the_prediction(smollm2, tmp_path):
    from app import knobs

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(TINY / "suite" / "recipe.json", inputs)
    seed = tmp_path / "seed"
    shutil.copytree(SEED, seed, ignore=shutil.ignore_patterns("__pycache__"))
    knobs.set_default(seed, "predicted", "on")
    passed = checker(seed, smollm2, inputs, tmp_path / "cache")
    assert passed.returncode == 0 and "CHECK PASS 1 cases" in passed.stdout, passed.stdout + passed.stderr
    bf16 = tmp_path / "bf16"
    shutil.copytree(seed, bf16)
    knobs.set_default(bf16, "dtype", "bfloat16")
    failed = checker(bf16, smollm2, inputs, tmp_path / "cache")
    assert failed.returncode == 1 and "CHECK FAIL recipe: first differing token at position" in failed.stdout
    echo = tmp_path / "echo"
    shutil.copytree(seed, echo)
    engine = echo / "engine.py"
    verified = "n = next((i for i, d in enumerate(draft) if greedy[i] != d), len(draft))\n"
    unverified = "n = len(draft)  # accepted without verifying\n"
    engine.write_text(engine.read_text().replace(verified, unverified))
    assert unverified in engine.read_text()
    failed = checker(echo, smollm2, inputs, tmp_path / "cache")
    assert failed.returncode == 1 and "CHECK FAIL recipe: first differing token" in failed.stdout


@pytest.mark.slow
def test_tiny_target_runs_over_ssh_with_the_tuner(server, tmp_path, monkeypatch, home, models_dir):
    configure(server, tmp_path, monkeypatch)
    bundle = tmp_path / "predicted-outputs-tiny"
    shutil.copytree(TINY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    for extra in ("suite/menu.json", "suite/recipe.json", "hidden/average.json"):
        (bundle / extra).unlink()
    for kept in ("suite/email.json", "hidden/story.json"):
        (bundle / kept).write_text(json.dumps(json.loads((bundle / kept).read_text()) | {"max_tokens": 64}))
    home.mkdir(parents=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(models_dir)
    result = atelier("run", str(bundle), "--executor", "cuda_remote:box", "--max-rounds", "1", "--baseline-repeats",
                     "2", "--no-confirm", home=home, timeout=3000)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = rows(home, "SELECT * FROM runs")
    assert run["status"] == "done" and run["executor"] == "cuda_remote:box" and run["baseline"] > 0
    [round] = rows(home, "SELECT * FROM rounds")
    assert round["status"] == "accepted" and round["metric"] < run["baseline"], dict(round)
    assert '"predicted": "on"' in round["proposal"]
    verdicts = [tuple(v) for v in rows(home, "SELECT role, passed FROM verdicts WHERE round = 1")]
    assert ("judge", 1) in verdicts and ("evaluator", 1) in verdicts
    there = tmp_path / "remote" / "runs" / run["id"]
    assert (there / "readonly" / "check.py").stat().st_mode & 0o222 == 0
    assert list((there / "cache").glob("predicted-reference-*.json"))
    assert list((Path(run["dir"]) / "cache").glob("predicted-reference-*.json"))
    assert '"host": "atelier-test-' in (Path(run["dir"]) / "hardware.json").read_text()


@pytest.mark.slow
def test_server_answers_chat_completions_with_a_prediction(smollm2, tmp_path):
    import openai

    from app import knobs

    seed = tmp_path / "seed"
    shutil.copytree(SEED, seed, ignore=shutil.ignore_patterns("__pycache__"))
    knobs.set_default(seed, "predicted", "on")
    command = [sys.executable, "server.py", "--model", str(smollm2), "--port", "0"]
    server = subprocess.Popen(command, cwd=seed, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline())["port"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        file = "The quick brown fox jumps over the lazy dog."
        messages = [{"role": "system", "content": "Reply with the updated text only."},
                    {"role": "user", "content": f"Replace fox with cat in this text:\n\n{file}"}]  # fmt: skip
        plain = client.chat.completions.create(model="m", messages=messages, max_tokens=24)
        predicted = client.chat.completions.create(
            model="m", messages=messages, max_tokens=24, prediction={"type": "content", "content": file}
        )
        assert predicted.choices[0].message.content == plain.choices[0].message.content
        assert predicted.usage.completion_tokens_details.accepted_prediction_tokens > 4
        chunks = client.chat.completions.create(model="m", messages=messages, max_tokens=24, stream=True,
                                                prediction={"type": "content", "content": file})  # fmt: skip
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == plain.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="temperature must be 0"):
            client.chat.completions.create(model="m", messages=messages, temperature=0.7)
    finally:
        server.kill()
        server.wait()
