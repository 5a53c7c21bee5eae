"""`atelier doctor` on this machine: a healthy setup, a missing sandbox and an unreachable endpoint, each one line
with its fix, and the key never printed."""

import os
import socket
from pathlib import Path

import pytest

from app import doctor
from scripted_llm import ScriptedLLM

KEY = "sk-doctor-secret-7d1f"


def config(tmp_path: Path, url: str) -> Path:
    file = tmp_path / "config.toml"
    file.write_text(f'[llm]\nbase_url = "{url}"\nmodel = "coder"\napi_key_env = "DOCTOR_KEY"\n')
    return file


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def llm():
    server = ScriptedLLM()
    yield server
    server.close()


def checked(capsys) -> tuple[int, str]:
    code = doctor.main()
    out = capsys.readouterr().out
    assert KEY not in out
    return code, out


def test_a_healthy_setup_is_ready(bwrap, llm, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATELIER_CONFIG", str(config(tmp_path, llm.url)))
    monkeypatch.setenv("DOCTOR_KEY", KEY)
    code, out = checked(capsys)
    assert code == 0 and out.rstrip().endswith("ready for a run"), out
    assert f"ok    llm coder      {llm.url} answers" in out and "key from $DOCTOR_KEY" in out
    assert "ok    sandbox        bubblewrap" in out and "GFLOP/s" in out


def test_an_unreachable_endpoint_fails_without_its_key(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("ATELIER_CONFIG", str(config(tmp_path, url)))
    monkeypatch.setenv("DOCTOR_KEY", KEY)
    code, out = checked(capsys)
    assert code == 1 and f"FAIL  llm coder      {url} is unreachable (key from $DOCTOR_KEY)" in out, out


def test_an_unset_key_is_named(llm, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATELIER_CONFIG", str(config(tmp_path, llm.url)))
    monkeypatch.delenv("DOCTOR_KEY", raising=False)
    code, out = checked(capsys)
    assert code == 1 and "$DOCTOR_KEY is not set" in out, out


def test_a_missing_sandbox_is_named_with_its_fix(tmp_path, monkeypatch, capsys):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "git").symlink_to("/usr/bin/git")
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.delenv("ATELIER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out = checked(capsys)
    assert code == 1 and "FAIL  sandbox        bubblewrap is not installed: apt-get install bubblewrap" in out, out
    assert "ok    git" in out and "note  ssh            not found" in out and os.environ["PATH"] == str(tools)
