"""showo2-tiny: the synthetic model recipe, the PyTorch reference, the MLX port and its knobs, the checker."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import knobs
from app.model import ModelError, prepare
from app.target import Model, load
from backends import sandbox
from backends.executor import Sandbox
from conftest import atelier, rows

TARGET = Path(__file__).resolve().parents[1] / "targets" / "showo2-tiny"
CASE = json.loads((TARGET / "suite" / "cases.json").read_text())[0]
PROMPT, SEED, STEPS, GUIDANCE = CASE["prompt"], CASE["seed"], CASE["steps"], CASE["guidance"]


def module(name: str):
    spec = importlib.util.spec_from_file_location(f"showo2_{name}", TARGET / f"{name}.py")
    found = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = found
    spec.loader.exec_module(found)
    return found


metrics = module("metrics")
THRESHOLDS = module("stack").load_thresholds(TARGET / "thresholds.toml")


@pytest.fixture(scope="session")
def showo2_model(tmp_path_factory) -> Path:
    target = load(str(TARGET))
    return prepare(target.model, target.dir, target.executor, tmp_path_factory.mktemp("showo2-home") / "models")


def reference_image(model: Path, out: Path, prompt=PROMPT, steps=STEPS, guidance=GUIDANCE) -> np.ndarray:
    command = [sys.executable, "-m", "reference.generate", "--model", str(model), "--prompt", prompt]
    command += ["--seed", str(SEED), "--steps", str(steps), "--guidance", str(guidance), "--out", str(out)]
    subprocess.run(command, cwd=TARGET, check=True, capture_output=True)
    return np.asarray(Image.open(out).convert("RGB"))


@pytest.fixture(scope="session")
def reference(showo2_model, tmp_path_factory) -> np.ndarray:
    return reference_image(showo2_model, tmp_path_factory.mktemp("showo2-ref") / "fox.png")


@pytest.fixture(scope="session")
def check_cache(showo2_model, reference, tmp_path_factory) -> Path:
    """A checker cache holding the reference image, as check.py names it, so checker runs skip the reference."""
    check, client = module("check"), module("stack")
    cache = tmp_path_factory.mktemp("showo2-cache")
    case = client.load_cases(TARGET / "suite")[0]
    Image.fromarray(reference).save(cache / f"showo2-tiny-reference-{check.reference_key(showo2_model, case)}.png")
    return cache


def stack_with(folder: Path, **settings) -> Path:
    """A copy of the seed stack with knob defaults set (and the system OpenBLAS, so that it runs at speed)."""
    stack = folder / "stack"
    shutil.copytree(TARGET / "seed", stack, ignore=shutil.ignore_patterns("__pycache__"))
    for name, value in ({"blas": "openblas"} | settings).items():
        knobs.set_default(stack, name, value)
    return stack


def stack_image(stack: Path, model: Path, steps=STEPS) -> tuple[np.ndarray, dict]:
    client = module("stack")
    with client.Stack(stack, model) as worker:
        worker.wait_ready()
        out = stack.parent / "image.png"
        answer = worker.ask(client.Case("fox", PROMPT, SEED, steps, GUIDANCE).request(out))
        return np.asarray(Image.open(out).convert("RGB")), answer["timings"]


def run_script(name: str, stack: Path, model: Path, cache: Path, prefix: list[str] | None = None):
    command = [sys.executable, str(TARGET / name), "--stack", str(stack), "--model", str(model)]
    command += ["--inputs", str(TARGET / "suite"), "--cache", str(cache)]
    env = os.environ | {"ATELIER_CONFINE": json.dumps(prefix or [])}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


def test_the_model_recipe_is_generated_once_and_cached(showo2_model, tmp_path):
    config = json.loads((TARGET / "model" / "config.json").read_text())
    assert json.loads((showo2_model / "config.json").read_text()) == config
    again = prepare(Model(path=str(TARGET / "model")), TARGET, "mlx", showo2_model.parent)
    assert again == showo2_model
    other = prepare(Model(path=str(TARGET / "model")), TARGET, "mlx", tmp_path / "models")
    assert (other / "model.safetensors").read_bytes() == (showo2_model / "model.safetensors").read_bytes()


def test_a_failing_model_recipe_is_one_clear_error(tmp_path):
    recipe = tmp_path / "broken"
    recipe.mkdir()
    (recipe / "generate.py").write_text("raise SystemExit('no weights today')\n")
    with pytest.raises(ModelError, match="generate.py failed: no weights today"):
        prepare(Model(path=str(recipe)), tmp_path, "mlx", tmp_path / "models")


@pytest.fixture(scope="module")
def torch_reference(showo2_model):
    """The reference sampler in this process, for the images the checker never sees (one model load for all)."""
    for name in [n for n in sys.modules if n.partition(".")[0] == "reference"]:
        del sys.modules[name]  # another bundle's reference package (a namespace package: no file to forget it by)
    sys.path.insert(0, str(TARGET))
    try:
        from reference.generate import Reference
    finally:
        sys.path.remove(str(TARGET))
    model = Reference(showo2_model)
    return lambda prompt=PROMPT, steps=6, guidance=GUIDANCE: np.asarray(model.generate(prompt, SEED, steps, guidance))


def test_the_reference_is_deterministic_and_its_image_depends_on_prompt_and_guidance(reference, torch_reference):
    assert reference.shape == (64, 64, 3) and reference.std() > 20
    assert ((reference == 0) | (reference == 255)).mean() < 0.05
    short = torch_reference()
    assert np.array_equal(torch_reference(), short)
    other = torch_reference(prompt="a blue boat on a lake")
    unguided = torch_reference(guidance=1.0)
    assert metrics.mae(other, short) > 5
    assert metrics.mae(unguided, short) > 3


def test_the_mlx_port_at_its_defaults_matches_the_reference(showo2_model, reference, tmp_path):
    image, timings = stack_image(stack_with(tmp_path), showo2_model)
    failures, _ = metrics.judge(image, reference, THRESHOLDS)
    assert failures == []
    assert metrics.mae(image, reference) < 0.05
    assert set(timings) >= {"body_s", "head_s", "vae_s", "total_s"} and timings["body_s"] > 0


EXACT = [
    {"body_cache": "on"},
    {"prefill_trim": "on"},
    {"body_cache": "on", "head_cache": "on"},
    {"body_cache": "on", "head_cache": "on", "prefill_trim": "on"},
    {"siglip": "per_step"},
    {"compile": "on", "body_cache": "on"},
]
WITHIN = [{"cfg_stride": 2}, {"cfg_stride": 3}, {"head_bits": "8"}, {"body_bits": "8"}]
BROKEN = [
    ({"cfg_stride": 4}, "mae"),
    ({"cfg_stride": 6}, "psnr"),
    ({"siglip": "first"}, "ssim"),
    ({"head_bits": "4"}, "psnr"),
    ({"body_bits": "4"}, "ssim"),
]


@pytest.mark.parametrize("settings", EXACT[:2])
def test_exact_knobs_keep_the_image(settings, showo2_model, reference, tmp_path):
    image, _ = stack_image(stack_with(tmp_path, **settings), showo2_model)
    assert metrics.mae(image, reference) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("settings", EXACT[2:] + WITHIN)
def test_knobs_keep_the_image_within_the_thresholds(settings, showo2_model, reference, tmp_path):
    image, _ = stack_image(stack_with(tmp_path, **settings), showo2_model)
    assert metrics.judge(image, reference, THRESHOLDS)[0] == []
    if settings in EXACT:
        assert metrics.mae(image, reference) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize(("settings", "metric"), BROKEN)
def test_lossy_knobs_pushed_too_far_break_the_image(settings, metric, showo2_model, reference, tmp_path):
    image, _ = stack_image(stack_with(tmp_path, **settings), showo2_model)
    failures, _ = metrics.judge(image, reference, THRESHOLDS)
    assert any(f.startswith(metric) for f in failures), failures


def test_the_checker_metrics_pass_identical_images_and_name_the_failing_metric(reference):
    assert metrics.judge(reference, reference.copy(), THRESHOLDS) == ([], "mae 0 psnr inf ssim 1")
    rng = np.random.default_rng(0)
    noised = np.clip(reference + rng.normal(0, 12, reference.shape), 0, 255).astype(np.uint8)
    failures, _ = metrics.judge(noised, reference, THRESHOLDS)
    assert [f.split()[0] for f in failures] == ["mae", "psnr", "ssim"]
    brighter = np.clip(reference.astype(int) + 3, 0, 255).astype(np.uint8)
    assert [f.split()[0] for f in metrics.judge(brighter, reference, THRESHOLDS)[0]] == ["mae"]
    faint = np.clip(reference.astype(int) + rng.integers(-1, 2, reference.shape), 0, 255).astype(np.uint8)
    assert metrics.judge(faint, reference, THRESHOLDS)[0] == []
    shifted = np.roll(reference, 2, axis=1)
    assert metrics.judge(shifted, reference, THRESHOLDS)[0][0].startswith("mae")
    assert metrics.judge(reference[:32], reference, THRESHOLDS)[0] == [f"size (32, 64, 3) != {reference.shape}"]


def test_the_checker_rejects_a_too_aggressive_cfg_stride_naming_the_metric(showo2_model, check_cache, tmp_path):
    result = run_script("check.py", stack_with(tmp_path, cfg_stride=6), showo2_model, check_cache)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("CHECK FAIL mae ") and line.endswith("> 2.0 (fox)") for line in lines), lines
    assert any(line.startswith("CHECK FAIL psnr ") for line in lines), lines


def test_the_checker_computes_the_reference_once_and_fails_a_stack_that_does_not_start(showo2_model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_script("check.py", tmp_path / "empty", showo2_model, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("showo2-tiny-reference-*.png"))) == 1
    assert result.returncode == 1
    assert result.stdout.startswith("CHECK FAIL fox: stack did not start")


@pytest.mark.slow
def test_the_checker_passes_the_seed_and_the_benchmark_reports_components(showo2_model, check_cache, tmp_path):
    stack = stack_with(tmp_path, cfg_stride=2)
    checked = run_script("check.py", stack, showo2_model, check_cache)
    assert checked.returncode == 0 and checked.stdout.startswith("CHECK PASS fox: mae "), checked.stdout
    bench = run_script("bench.py", stack, showo2_model, check_cache)
    assert bench.returncode == 0, bench.stderr
    names = [line.split()[1] for line in bench.stdout.splitlines() if line.startswith("METRIC ")]
    assert names == ["latency_s", "body_s", "head_s", "vae_s", "startup_s", "floor_s", "floor_ratio", "floor_gflop",
                     "matmul_gflops", "bandwidth_gbs", "checked_outputs"]  # fmt: skip
    assert "METRIC checked_outputs 1" in bench.stdout


FAKE = """
import json, sys
from PIL import Image

print(json.dumps({"ready": True}), flush=True)
warm = False
for line in sys.stdin:
    request = json.loads(line)
    warm = warm or request["steps"] < 20
    Image.new("RGB", (64, 64), (200, 0, 0) if warm else (9, 99, 199)).save(request["out"])
    print(json.dumps({"id": request["id"], "out": request["out"], "timings": {}}), flush=True)
"""


def fake_stack(folder: Path, code: str) -> Path:
    folder.mkdir()
    (folder / "serve.py").write_text(code)
    return folder


@pytest.fixture
def plain_cache(showo2_model, tmp_path) -> Path:
    """A checker cache whose reference for the suite's case is a plain blue image, as the fake stack draws it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    case = module("stack").load_cases(TARGET / "suite")[0]
    name = f"showo2-tiny-reference-{module('check').reference_key(showo2_model, case)}.png"
    Image.new("RGB", (64, 64), (9, 99, 199)).save(cache / name)
    return cache


def test_the_benchmark_fails_a_stack_whose_images_are_wrong_only_when_benchmarked(showo2_model, plain_cache, tmp_path):
    stack = fake_stack(tmp_path / "stack", FAKE)
    checked = run_script("check.py", stack, showo2_model, plain_cache)
    assert checked.returncode == 0 and checked.stdout.startswith("CHECK PASS fox: mae 0 "), checked.stdout
    bench = run_script("bench.py", stack, showo2_model, plain_cache)
    assert bench.returncode == 1 and "METRIC" not in bench.stdout, bench.stdout + bench.stderr
    assert bench.stdout.startswith("CHECK FAIL benchmark: fox differs from the reference: mae "), bench.stdout
    empty = run_script("bench.py", stack, showo2_model, tmp_path / "none")
    assert empty.returncode == 1 and empty.stdout == (
        "CHECK FAIL benchmark: no reference outputs in the cache for these inputs (run the checker first)\n"
    )


PEEK = """
import json, os, sys

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    seen = [path for path in PATHS if os.access(path, os.R_OK)]
    sys.stderr.write("\\nMETRIC latency_s 0.001\\n")
    print(json.dumps({"id": request["id"], "error": f"saw {seen}\\nMETRIC latency_s 0.001"}), flush=True)
"""


def test_a_confined_stack_sees_neither_cache_nor_inputs_and_cannot_forge_a_line(
    bwrap, showo2_model, plain_cache, tmp_path
):
    paths = [str(p) for p in (plain_cache, TARGET / "suite" / "cases.json", TARGET / "check.py")]
    stack = fake_stack(tmp_path / "stack", f"PATHS = {paths!r}\n" + PEEK)
    plain = run_script("check.py", stack, showo2_model, plain_cache)
    assert plain.stdout == f"CHECK FAIL fox: request fox: saw {paths!r} METRIC latency_s 0.001\n", plain.stdout
    prefix = sandbox.launcher(Sandbox(stack, readable=(showo2_model,)))
    confined = run_script("check.py", stack, showo2_model, plain_cache, prefix)
    assert confined.stdout == "CHECK FAIL fox: request fox: saw [] METRIC latency_s 0.001\n", confined.stdout
    for result in (plain, confined):
        assert result.returncode == 1 and not any(line.startswith("METRIC") for line in result.stdout.splitlines())


@pytest.mark.slow
def test_the_tuner_run_on_showo2_tiny_ends_with_an_accepted_faster_round(home, tmp_path):
    bundle = tmp_path / "showo2-tiny"  # one benchmark repeat a side: the exact knobs' gains are far beyond the noise
    shutil.copytree(TARGET, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    (bundle / "target.toml").write_text((TARGET / "target.toml").read_text().replace("repeats = 2", "repeats = 1"))
    result = atelier(
        "run",
        str(bundle),
        "--policy",
        "tuner",
        "--max-rounds",
        "3",
        "--baseline-repeats",
        "2",
        "--no-confirm",
        home=home,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    accepted = rows(home, "SELECT gain FROM rounds WHERE status = 'accepted' AND n > 0")
    assert accepted and min(r["gain"] for r in accepted) > 1
