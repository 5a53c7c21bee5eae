from pathlib import Path

import pytest

from app import target
from app.cli import main
from conftest import ROOT


def write(bundle, old: str, new: str) -> None:
    toml = bundle / "target.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new))


def one_repeat(bundle: Path) -> Path:
    """The bundle benchmarked once per side in a round: for tests whose candidates differ far beyond the noise."""
    write(bundle, "repeats = 2", "repeats = 1")
    return bundle


def errors(capsys, *args) -> tuple[int, list[str]]:
    code = main(["validate", *args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line]


def test_bundled_targets_validate(capsys):
    for path in target.bundled():
        code, lines = errors(capsys, str(path))
        assert (code, lines) == (0, []), path


def test_toy_validates(toy, capsys):
    assert errors(capsys, str(toy)) == (0, [])


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('executor = "mlx"', 'executor = "mlx"\ncolour = "red"', "unknown key 'colour'"),
        ("repeats = 2", "repeats = 2\nwarmup = 1", "unknown key 'benchmark.warmup'"),
        ('metric = "decode_s"\n', "", "missing key 'benchmark.metric'"),
        ('direction = "lower"', 'direction = "down"', "benchmark.direction must be 'lower' or 'higher'"),
        ('executor = "mlx"', 'executor = "tpu"', "executor 'tpu' is not one of mlx, local, cuda_remote"),
        ("{readonly}/check.py", "{readonly}/chek.py", "'chek.py' is not among readonly.paths"),
        ("bench.py --stack {workspace}", "bench.py --stack {scratch}", "uses unknown placeholder {scratch}"),
        ('path = "model"', 'path = "model"\nhub = "a/b"', "needs exactly one of path, hub, package"),
        ('path = "model"', 'path = "model"\ndraft = "small"', "[model.draft] must be a table"),
        ('path = "model"', 'path = "model"\ndraft = {file = "x"}', "unknown key 'model.draft.file'"),
        ('path = "model"', 'path = "model"\ndraft = {path = "nowhere"}', "draft: model file not found"),
        ('path = "model"', 'path = "model"\ndraft = {hub = "no hub id"}', "draft: model.hub 'no hub id'"),
        ('instructions = "OBJECTIVE.md"', 'instructions = "GOALS.md"', "GOALS.md: missing file"),
        ('inputs = "inputs"\ntimeout = 120', 'inputs = "data"\ntimeout = 120', "checker.inputs 'data' must be one of"),
        ('name = "toy"', 'name = "toy', "target.toml"),
    ],
)
def test_malformed_target_names_the_problem(toy, capsys, old, new, expected):
    write(toy, old, new)
    code, lines = errors(capsys, str(toy))
    assert code == 2
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith("atelier: error: ")


def test_missing_model_file(toy, capsys):
    write(toy, 'path = "model"', 'path = "weights/model.gguf"')
    code, lines = errors(capsys, str(toy))
    assert code == 2
    assert lines == [f"atelier: error: model file not found: {toy / 'weights/model.gguf'}"]


def test_missing_package_model(toy, capsys):
    write(toy, 'path = "model"', 'package = "no_such_pkg/x.gguf"')
    code, lines = errors(capsys, str(toy))
    assert code == 2 and "Python package 'no_such_pkg' is not installed" in lines[0]


def test_run_refuses_a_malformed_target_before_touching_the_store(toy, home, capsys):
    write(toy, "repeats = 2", "repeats = 0")
    assert main(["run", str(toy)]) == 2
    assert "benchmark.repeats must be a whole number" in capsys.readouterr().err
    assert not (home / "runs").exists()


@pytest.mark.parametrize(
    "spec, expected", [("tpu", "is not one of mlx, local, cuda_remote"), ("local:box", "only cuda_remote takes a name")]
)
def test_run_refuses_a_bad_executor_override(toy, home, capsys, spec, expected):
    assert main(["run", str(toy), "--executor", spec]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("atelier: error: --executor: executor") and expected in line
    assert not (home / "runs").exists()


def test_unknown_target(capsys):
    code, lines = errors(capsys, "no-such-target")
    assert code == 2 and "no target.toml" in lines[0]


def test_targets_lists_json_tiny(capsys):
    assert main(["targets"]) == 0
    assert "json-tiny" in capsys.readouterr().out
    assert (ROOT / "targets" / "json-tiny" / "target.toml").exists()


def test_run_with_a_missing_model_file_is_one_line_and_no_run(toy, home, capsys):
    write(toy, 'path = "model"', 'path = "gone"')
    assert main(["run", str(toy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"atelier: error: model file not found: {toy / 'gone'}"]
    assert not (home / "runs").exists()


def test_json_mlx_names_its_draft_by_hub_id_and_shares_the_json_tiny_stack():
    json_mlx, json_tiny = target.load("json-mlx"), target.load("json-tiny")
    assert json_mlx.model.hub.endswith("Llama-3.1-8B-Instruct-8bit")
    assert json_mlx.model.draft == {"hub": "mlx-community/Llama-3.2-1B-Instruct-4bit"}
    assert (json_mlx.dir / "seed").resolve() == (json_tiny.dir / "seed").resolve()
    assert "--draft {draft}" in json_mlx.checker.command and "--draft {draft}" in json_mlx.serve
