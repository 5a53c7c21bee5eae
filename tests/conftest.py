import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "targets" / "toy"


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy-model") / "model"
    subprocess.run([sys.executable, str(TOY / "make_model.py"), str(out)], check=True)
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("ATELIER_HOME", str(path))
    return path


@pytest.fixture
def toy(tmp_path, toy_model) -> Path:
    """A writable copy of the toy target bundle with its synthetic model inside."""
    bundle = tmp_path / "toy"
    shutil.copytree(TOY, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(toy_model, bundle / "model")
    return bundle


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
