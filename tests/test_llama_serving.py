"""The llama serving bundles: the seed's OpenAI server, its continuous batching, the checker, the open-loop load.
Tests use a tiny fixed-seed Llama with a character tokenizer (llama3 RoPE scaling, GQA), the real
SmolLM2-135M-Instruct converted from its GGUF, and a tuner run; all but three are slow (several servers each)."""

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app import knobs
from app.target import check
from backends import sandbox
from backends.executor import Sandbox
from conftest import ONE_ROUND, ROOT, atelier, rows

TINY = ROOT / "targets" / "llama-h100-tiny"
CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
CHAT += "{% if add_generation_prompt %}<|assistant|>{% endif %}"
PROMPTS = ["Hello there.", "Count to five.", "Why is the sea salty?", "Name a colour.", "Tell me a joke.", "Hi"]


def bundle_module(name: str):
    spec = importlib.util.spec_from_file_location(f"llama_{name.replace('/', '_')}", TINY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if str(TINY) in sys.path:
        sys.path.remove(str(TINY))
    sys.path.insert(0, str(TINY))
    spec.loader.exec_module(module)
    return module


def make_tiny_llama(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = ["\n", *map(chr, range(32, 127))]
    vocab = {c: i for i, c in enumerate(chars)} | {"</s>": len(chars), "<s>": len(chars) + 1, "<unk>": len(chars) + 2}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = CHAT
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # fmt: skip
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rope_parameters=rope, bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"], tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(7)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=vocab["</s>"], bos_token_id=vocab["<s>"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture
def tiny_llama(tiny_model, monkeypatch) -> Path:
    """The tiny model, served with one torch thread: its ops are too small to split, and on a busy machine
    two spinning OpenMP threads make each step tens of times slower."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tiny_model


@pytest.fixture(scope="module")
def tiny_cache(tiny_model, tmp_path_factory) -> Path:
    """A checker cache holding the tiny model's references for the public suite, as check.py --max-tokens 32 names
    them: the benchmark checks its mixed-in suite answers against them."""
    cache = tmp_path_factory.mktemp("tiny-cache")
    cases = json.loads((TINY / "suite" / "prompts.json").read_text())
    bundle_module("check").reference_outputs(tiny_model, cases, 32, cache)
    for name in [n for n in sys.modules if n.partition(".")[0] == "reference"]:
        del sys.modules[name]  # the bundle's reference package has no __init__.py: conftest cannot forget it
    return cache


def seed_with(tmp_path: Path, **settings) -> Path:
    stack = tmp_path / "-".join(f"{k}{v}" for k, v in settings.items())
    shutil.copytree(TINY / "seed", stack, ignore=shutil.ignore_patterns("__pycache__"))
    for name, value in settings.items():
        knobs.set_default(stack, name, value)
    return stack


class Served:
    def __init__(self, stack: Path, model: Path):
        self.stack_module = bundle_module("stack")
        self.port = self.stack_module.free_port()
        self.server = self.stack_module.stack_server(stack, model, self.port)

    def __enter__(self):
        self.server.__enter__()
        self.server.wait_ready()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def token_ids(self, prompts: list[str], max_tokens: int) -> list[list[int]]:
        """Every prompt sent at once; each answer's token ids."""
        answers: dict[int, list[int]] = {}

        def ask(i: int) -> None:
            body = {"messages": [{"role": "user", "content": prompts[i]}], "max_tokens": max_tokens,
                    "return_token_ids": True}  # fmt: skip
            answers[i] = self.stack_module.post(self.port, "/v1/chat/completions", body)["choices"][0]["token_ids"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [answers[i] for i in range(len(prompts))]


def openai_answers(port: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "Say something."}]
    plain = client.chat.completions.create(model="m", messages=messages, max_tokens=12, temperature=0)
    chunks = client.chat.completions.create(
        model="m", messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    streamed, usage = "", None
    for chunk in chunks:
        streamed += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        usage = chunk.usage or usage
    text = client.completions.create(model="m", prompt="Once upon", max_tokens=6)
    text_streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="m", prompt="Once upon", max_tokens=6, stream=True))  # fmt: skip
    return {"plain": plain, "streamed": streamed, "usage": usage, "text": text, "text_streamed": text_streamed}


def test_the_seed_server_answers_the_openai_client_streamed_and_not(tiny_llama):
    with Served(TINY / "seed", tiny_llama) as served:
        got = openai_answers(served.port)
        with pytest.raises(Exception, match="temperature"):
            served.stack_module.post(served.port, "/v1/completions", {"prompt": "x", "temperature": 0.7})
    plain = got["plain"].choices[0]
    assert plain.message.content == got["streamed"] and plain.finish_reason in ("stop", "length")
    assert got["usage"].completion_tokens == got["plain"].usage.completion_tokens > 0
    assert got["text"].choices[0].text == got["text_streamed"] and got["text"].usage.completion_tokens > 0


@pytest.mark.slow
def test_batched_outputs_equal_batch_one_and_the_transformers_reference(tiny_llama, tmp_path):
    reference = bundle_module("reference/generate").Reference(tiny_llama)
    expected = [reference.generate([{"role": "user", "content": p}], 24)["tokens"] for p in PROMPTS]
    with Served(TINY / "seed", tiny_llama) as served:
        one = served.token_ids(PROMPTS, 24)
    with Served(seed_with(tmp_path, max_batch=4, prefill_chunk=64, attention="sdpa"), tiny_llama) as served:
        batched = served.token_ids(PROMPTS, 24)
    assert one == expected and batched == expected
    assert sum(len(t) for t in expected) > 4 * len(PROMPTS)


def run_checker(stack: Path, model: Path, cache: Path, inputs: Path = TINY / "suite", *extra: str):
    command = [sys.executable, str(TINY / "check.py"), "--stack", str(stack), "--model", str(model),
               "--inputs", str(inputs), "--cache", str(cache), *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_checker_passes_a_batched_stack_and_rejects_a_lossy_one(tiny_llama, tmp_path):
    batched = run_checker(seed_with(tmp_path, max_batch=8), tiny_llama, tmp_path / "cache", TINY / "hidden")
    assert batched.returncode == 0 and "CHECK PASS 4 prompts" in batched.stdout, batched.stdout + batched.stderr
    lossy = run_checker(seed_with(tmp_path, dtype="bf16"), tiny_llama, tmp_path / "cache", TINY / "hidden")
    assert lossy.returncode == 1 and "CHECK FAIL" in lossy.stdout and "first differing token" in lossy.stdout


def test_the_poisson_schedule_is_seeded_and_has_the_requested_rate():
    load = bundle_module("load")
    arrivals = load.schedule(8, 60, 42, 16)
    assert arrivals == load.schedule(8, 60, 42, 16) != load.schedule(8, 60, 43, 16)
    assert abs(len(arrivals) - 480) < 3 * 480**0.5 and all(0 <= a.at < 60 for a in arrivals)
    gaps = [b.at - a.at for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert abs(statistics.fmean(gaps) - 1 / 8) < 0.02 and statistics.stdev(gaps) > 0.09  # exponential: sd = mean
    big = load.schedule(128, 60, 42, 16)
    assert abs(len(big) / 60 - 128) < 3 * (128 / 60) ** 0.5 and {a.prompt for a in big} == set(range(16))


@pytest.mark.slow
def test_the_bench_closes_unfinished_requests_and_the_server_drops_them(tiny_llama, tiny_cache, tmp_path):
    """At 120 req/s for 2 s the batch-1 seed is asked for 72k tokens: about a minute here even for the tiny model,
    so plenty are still unfinished when the 10 s drain ends, however idle the machine."""
    command = [sys.executable, str(TINY / "bench.py"), "--stack", str(TINY / "seed"), "--model", str(tiny_llama),
               "--inputs", str(TINY / "workload"), "--cache", str(tiny_cache), "--rates", "120,1", "--duration", "2",
               "--max-tokens", "300", "--drain", "10", "--vllm", "auto"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = {line.split()[1]: float(line.split()[2]) for line in result.stdout.splitlines() if line[:6] == "METRIC"}
    assert metrics["unfinished_at_120"] > 10 and metrics["unfinished_at_1"] == 0, result.stderr
    assert metrics["checked_outputs"] >= 1  # the mixed-in suite prompts that brought tokens back
    assert metrics["output_tokens_per_s"] > 0 and metrics["ttft_ms_at_1"] > 0 and metrics["tpot_ms_at_1"] > 0
    assert "vllm: not installed" in result.stderr and not any(k.startswith("vllm_") for k in metrics)


def run_bench(stack: Path, model: Path, cache: Path, prefix: list[str] | None = None):
    command = [sys.executable, str(TINY / "bench.py"), "--stack", str(stack), "--model", str(model),
               "--inputs", str(TINY / "workload"), "--cache", str(cache), "--rates", "4", "--duration", "2",
               "--max-tokens", "8", "--drain", "60", "--vllm", "off"]  # fmt: skip
    env = os.environ | {"ATELIER_CONFINE": json.dumps(prefix or [])}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_the_bench_checks_mixed_in_suite_answers_and_fails_a_stack_wrong_only_under_load(
    bwrap, tiny_llama, tiny_cache, tmp_path
):
    honest = seed_with(tmp_path, max_batch=4)
    prefix = sandbox.launcher(Sandbox(honest, readable=(tiny_llama,), network=True))
    passed = run_bench(honest, tiny_llama, tiny_cache, prefix)
    assert passed.returncode == 0 and "METRIC checked_outputs 2\n" in passed.stdout, passed.stdout + passed.stderr
    cheat = seed_with(tmp_path, max_batch=8)  # answers token 3 to every step of a benchmark's ignore_eos request
    server = (cheat / "server.py").read_text()
    (cheat / "server.py").write_text(
        server.replace("tokens.append(token)", "tokens.append(3 if job['ignore_eos'] else token)")
    )
    checked = run_checker(cheat, tiny_llama, tiny_cache)
    assert checked.returncode == 0 and "CHECK PASS 6 prompts" in checked.stdout, checked.stdout + checked.stderr
    failed = run_bench(cheat, tiny_llama, tiny_cache)
    assert failed.returncode == 1 and "METRIC" not in failed.stdout, failed.stdout + failed.stderr
    lines = failed.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("CHECK FAIL benchmark: ") for line in lines), lines
    assert all("differs from the reference: first differing token at " in line for line in lines), lines
    missing = run_bench(honest, tiny_llama, tmp_path / "no-cache")
    assert missing.returncode == 1 and missing.stdout == (
        "CHECK FAIL benchmark: no reference outputs in the cache for these inputs (run the checker first)\n"
    )


def test_both_bundles_validate(home):
    for name in ("llama-h100", "llama-h100-tiny"):
        problems, target = check(ROOT / "targets" / name)
        assert problems == [] and target is not None
    h100 = check(ROOT / "targets" / "llama-h100")[1]
    assert h100.executor == "cuda_remote" and h100.model.hub == "meta-llama/Llama-3.1-8B-Instruct"
    assert "--rates 8,32,64,128 --duration 60 --seed 42 --max-tokens 128" in h100.benchmark.command
    assert (ROOT / "targets" / "llama-h100" / "seed").resolve() == (TINY / "seed").resolve()
    assert atelier("validate", "targets/llama-h100", home=home).returncode == 0


# The real SmolLM2 weights.
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory, gguf_path) -> Path:
    from backends import hf

    return hf.prepare_model(gguf_path, tmp_path_factory.mktemp("llama-models"))


@pytest.mark.slow
def test_smollm2_served_batched_is_token_identical_and_bf16_is_caught(smollm2, tmp_path):
    """The checker sends every prompt at once: batch-8 answers equal the Transformers reference token for token."""
    eight = seed_with(tmp_path, max_batch=8)
    passed = run_checker(eight, smollm2, tmp_path / "cache")
    assert passed.returncode == 0 and "CHECK PASS 6 prompts" in passed.stdout, passed.stdout + passed.stderr
    assert int(passed.stdout.split(", ")[1].split()[0]) > 60
    lossy = run_checker(seed_with(tmp_path, dtype="bf16"), smollm2, tmp_path / "cache")
    assert lossy.returncode == 1 and lossy.stdout.count("CHECK FAIL") >= 2, lossy.stdout


def quick_bundle(folder: Path) -> Path:
    """llama-h100-tiny made cheaper: one rate that neither side keeps up with, so each serves at its capacity, for
    3 s; 16-token checks of fewer prompts (2 public, 1 hidden), 4 workload prompts to warm up with."""
    bundle = folder / "llama-h100-tiny"
    shutil.copytree(TINY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    for name, keep in (("suite", 2), ("hidden", 1), ("workload", 4)):
        prompts = bundle / name / "prompts.json"
        prompts.write_text(json.dumps(json.loads(prompts.read_text())[:keep]))
    text = (bundle / "target.toml").read_text()
    cheaper = [("--max-tokens 32", "--max-tokens 16"), ("--rates 0.5,1,2 --duration 10", "--rates 4 --duration 3")]
    for old, new in cheaper:
        assert old in text
        text = text.replace(old, new)
    (bundle / "target.toml").write_text(text)
    return bundle


@pytest.mark.slow
def test_the_tuner_finds_batching_gains_on_llama_h100_tiny(home, tmp_path):
    bundle = quick_bundle(tmp_path)
    result = atelier("run", str(bundle), *ONE_ROUND, home=home, timeout=3600, check=True)
    [run] = rows(home, "SELECT * FROM runs")
    rounds = rows(home, "SELECT * FROM rounds ORDER BY n")
    assert [r["task"] for r in rounds][:1] == ["max_batch=4"], result.stdout
    accepted = [r for r in rounds if r["status"] == "accepted"]
    assert accepted and all(r["task"].startswith("max_batch=") for r in accepted), result.stdout
    assert all(r["gain"] > 1 + run["noise"] for r in accepted) and run["best"] > run["baseline"], result.stdout
    print(f"llama-h100-tiny: best {run['best']:.2f} tok/s over baseline {run['baseline']:.2f}: "
          f"{run['best'] / run['baseline']:.2f}×; rounds: {[(r['task'], r['status']) for r in rounds]}")  # fmt: skip


def stand_in_vllm(tmp_path: Path) -> dict:
    """An importable `vllm` and a `vllm` command on PATH whose `serve` starts the seed's server: the benchmark's
    baseline row (command, readiness, same load, vllm_* lines, reuse) without the real vLLM, which needs CUDA."""
    site, bin_dir = tmp_path / "site", tmp_path / "bin"
    (site / "vllm").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text("")
    (site / "vllm-0.0.1.dist-info").mkdir()
    (site / "vllm-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.0.1\n")
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(
        f"#!{sys.executable}\nimport os, sys\nargs = sys.argv[1:]\nassert args[0] == 'serve'\n"
        f"port = args[args.index('--port') + 1]\nos.chdir({str(TINY / 'seed')!r})\n"
        "os.execv(sys.executable, [sys.executable, 'server.py', '--model', args[1], '--port', port])\n"
    )
    script.chmod(0o755)
    return {"PYTHONPATH": str(site), "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.slow
def test_the_bench_reports_a_vllm_row_when_vllm_is_importable(tiny_llama, tiny_cache, tmp_path):
    env = os.environ | stand_in_vllm(tmp_path)
    command = [sys.executable, str(TINY / "bench.py"), "--stack", str(TINY / "seed"), "--model", str(tiny_llama),
               "--inputs", str(TINY / "workload"), "--cache", str(tiny_cache), "--rates", "2", "--duration", "2",
               "--max-tokens", "8", "--vllm-cache", str(tmp_path / "rows")]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    rows_of = [{line.split()[1]: line.split()[2] for line in r.stdout.splitlines() if "METRIC vllm_" in line}
               for r in (first, again)]  # fmt: skip
    assert rows_of[0] == rows_of[1] and float(rows_of[0]["vllm_output_tokens_per_s_at_2"]) > 0
    assert "vllm: ready after" in first.stderr and "vllm: reusing" in again.stderr
