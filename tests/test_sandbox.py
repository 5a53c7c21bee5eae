import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from backends import sandbox
from backends.executor import Sandbox
from backends.mlx.executor import LocalExecutor


@pytest.fixture
def run_dir(bwrap) -> Path:
    """A run's layout outside /tmp (the sandbox gets a private /tmp): workspace/ beside readonly/."""
    path = Path(tempfile.mkdtemp(prefix="atelier-sandbox-test-", dir="/var/tmp"))
    (path / "workspace").mkdir()
    (path / "readonly").mkdir()
    (path / "readonly" / "check.py").write_text("print('CHECK OK')\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def confined(code: str, workspace: Path, **options) -> subprocess.CompletedProcess:
    """code run by this Python in a sandbox seeing the whole file system read-only (the harness's view) unless
    whole=False (a candidate's or an agent's: the toolchain and what is named)."""
    options = {"whole": True, **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}}
    argv = sandbox.wrap([sys.executable, "-c", code], Sandbox(workspace, **options))
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=sandbox.confined_env(Sandbox(workspace))
    )


def test_writes_inside_the_workspace(run_dir):
    workspace = run_dir / "workspace"
    result = confined("import os; open('out.txt', 'w').write(os.getcwd())", workspace)
    assert result.returncode == 0, result.stderr
    assert (workspace / "out.txt").read_text() == str(workspace)


def test_a_workspace_under_tmp_stays_visible(bwrap, tmp_path):
    result = confined("open('out.txt', 'w').write('ok')", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "ok"


@pytest.mark.skipif(not os.access("/run", os.W_OK), reason="needs a writable /run")
def test_a_workspace_under_run_stays_visible(bwrap):
    workspace = Path(tempfile.mkdtemp(prefix="atelier-sandbox-test-", dir="/run"))
    try:
        result = confined("open('out.txt', 'w').write('ok')", workspace)
        assert result.returncode == 0, result.stderr
        assert (workspace / "out.txt").read_text() == "ok"
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def test_cannot_write_outside_the_workspace(run_dir):
    check = run_dir / "readonly" / "check.py"
    result = confined(f"open({str(check)!r}, 'w').write('print(\"CHECK OK\")  # tampered')", run_dir / "workspace")
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert check.read_text() == "print('CHECK OK')\n"
    result = confined(f"open({str(run_dir / 'new.txt')!r}, 'w')", run_dir / "workspace")
    assert "Read-only file system" in result.stderr
    assert not (run_dir / "new.txt").exists()


def test_git_metadata_stays_read_only(run_dir):
    workspace = run_dir / "workspace"
    git = ["git", "-C", str(workspace), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    (workspace / "stack.py").write_text("A = 1\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "seed"], check=True)
    code = "open('stack.py', 'w').write('A = 2\\n'); open('.git/hooks/post-checkout', 'w').write('#!/bin/sh')"
    result = confined(code, workspace)
    assert "Read-only file system" in result.stderr
    assert not (workspace / ".git" / "hooks" / "post-checkout").exists()
    diff = subprocess.run(sandbox.wrap(["git", "diff", "--stat"], Sandbox(workspace)), capture_output=True, text=True)
    assert diff.returncode == 0 and "stack.py" in diff.stdout


def test_cannot_write_to_home(run_dir):
    probe = Path.home() / f".atelier-sandbox-probe-{secrets.token_hex(4)}"
    result = confined(f"open({str(probe)!r}, 'w').write('x')", run_dir / "workspace")
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert not probe.exists()


def test_extra_writable_paths_and_a_private_tmp(run_dir):
    cache = run_dir / "readonly"
    result = confined(f"open({str(cache / 'cache.txt')!r}, 'w').write('ok')", run_dir / "workspace", writable=[cache])
    assert result.returncode == 0, result.stderr
    assert (cache / "cache.txt").read_text() == "ok"
    marker = f"atelier-sandbox-{secrets.token_hex(4)}"
    result = confined(f"open('/tmp/{marker}', 'w').write('x')", run_dir / "workspace")
    assert result.returncode == 0, result.stderr
    assert not Path("/tmp", marker).exists()


def test_no_network_unless_asked_for(run_dir):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('connected')"
        blocked = confined(code, run_dir / "workspace")
        assert blocked.returncode != 0
        assert "ConnectionRefusedError" in blocked.stderr
        allowed = confined(code, run_dir / "workspace", network=True)
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout.strip() == "connected"
        server.settimeout(5)
        peer, _ = server.accept()
        peer.close()


@pytest.mark.skipif(not os.access("/run", os.W_OK), reason="needs a writable /run to host a service socket")
def test_no_service_sockets_in_run_without_network(run_dir):
    services = Path(tempfile.mkdtemp(prefix="atelier-sandbox-test-", dir="/run"))
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(services / "db.sock"))
            server.listen()
            code = f"import socket; socket.socket(socket.AF_UNIX).connect({str(services / 'db.sock')!r})"
            assert "FileNotFoundError" in confined(code, run_dir / "workspace").stderr
            assert confined(code, run_dir / "workspace", network=True).returncode == 0
    finally:
        shutil.rmtree(services, ignore_errors=True)


def test_imports_mlx_inside(run_dir):
    result = confined("import mlx.core as mx; print(mx.array([1, 2, 3]).sum().item())", run_dir / "workspace")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "6"


def test_executor_runs_sandboxed(run_dir):
    workspace = run_dir / "workspace"
    check = run_dir / "readonly" / "check.py"
    code = f"open('ok.txt', 'w').write('ok'); open({str(check)!r}, 'w')"
    result = LocalExecutor().run([sys.executable, "-c", code], workspace, 120, sandbox=Sandbox(workspace, whole=True))
    assert not result.ok
    assert "Read-only file system" in result.output
    assert result.command[0] == "bwrap"
    assert (workspace / "ok.txt").read_text() == "ok"
    assert check.read_text() == "print('CHECK OK')\n"


def test_executor_passes_no_credentials(run_dir, monkeypatch):
    monkeypatch.setenv("ATELIER_TEST_API_KEY", "sk-test")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    workspace = run_dir / "workspace"
    code = "import os; e = os.environ; print(e.get('ATELIER_TEST_API_KEY'), e['LC_ALL'], e['ROUND'], 'PATH' in e)"
    result = LocalExecutor().run(
        [sys.executable, "-c", code], workspace, 120, env={"ROUND": "3"}, sandbox=Sandbox(workspace)
    )
    assert result.ok, result.output
    assert result.output.splitlines()[-1] == "None C.UTF-8 3 True"
    unconfined = LocalExecutor().run(
        [sys.executable, "-c", "import os; print(os.environ['ATELIER_TEST_API_KEY'])"], workspace, 60
    )
    assert unconfined.output.strip() == "sk-test"


def test_executor_kills_the_sandbox_at_the_timeout(run_dir):
    marker = f"{secrets.randbelow(10**6) + 1000}.5"
    workspace = run_dir / "workspace"
    start = time.monotonic()
    command = ["sh", "-c", f"sleep {marker} & sleep {marker}"]
    result = LocalExecutor().run(command, workspace, 2, sandbox=Sandbox(workspace))
    assert result.timed_out
    assert time.monotonic() - start < 30
    time.sleep(0.5)
    assert not [p for p in Path("/proc").glob("[0-9]*") if marker in _cmdline(p)]


def test_executor_refuses_another_folder(run_dir):
    with pytest.raises(sandbox.SandboxError, match="runs in its workspace"):
        LocalExecutor().run(["true"], run_dir, 10, sandbox=Sandbox(run_dir / "workspace"))


def test_bad_workspace(run_dir):
    with pytest.raises(sandbox.SandboxError, match="workspace is not a folder"):
        sandbox.wrap(["true"], Sandbox(run_dir / "missing"))


def test_missing_bwrap_is_an_error_not_an_unconfined_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert sandbox.available() == "bubblewrap is not installed: apt-get install bubblewrap"
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap"):
        sandbox.wrap(["true"], Sandbox(tmp_path))
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap"):
        sandbox.launcher(Sandbox(tmp_path))
    with pytest.raises(sandbox.SandboxError):
        LocalExecutor().run(["true"], tmp_path, 10, sandbox=Sandbox(tmp_path))


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_text()
    except OSError:
        return ""


def test_a_candidate_sees_the_toolchain_and_what_is_named_only(run_dir, monkeypatch):
    home = Path(tempfile.mkdtemp(prefix="atelier-sandbox-home-", dir="/var/tmp"))
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("secret")
    monkeypatch.setenv("HOME", str(home))
    (run_dir / "cache").mkdir()
    (run_dir / "cache" / "reference.json").write_text("[1, 2, 3]")
    paths = [home / ".ssh" / "id_ed25519", run_dir / "cache" / "reference.json", run_dir / "readonly" / "check.py"]
    code = f"import os; print([os.path.exists(p) for p in {[str(p) for p in paths]!r}], os.environ['HOME'])"
    try:
        seen = confined(code, run_dir / "workspace", whole=False, readable=[run_dir / "readonly"])
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.split() == ["[False,", "False,", "True]", "/tmp"]
        shadow = confined("print(repr(open('/etc/shadow').read()))", run_dir / "workspace", whole=False)
        assert "PermissionError" in shadow.stderr or shadow.stdout.strip() == "''"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_launched_candidate_runs_apart_from_its_harness(run_dir, monkeypatch):
    """The harness in its sandbox starts the candidate through the launcher: the candidate has its own PID
    namespace (no harness process to trace or signal), a cleared environment, and the harness's private network."""
    monkeypatch.setenv("ATELIER_TEST_API_KEY", "sk-planted")
    workspace = run_dir / "workspace"
    prefix = sandbox.launcher(Sandbox(workspace, network=True))
    candidate = (
        "import os, socket; pids = [p for p in os.listdir('/proc') if p.isdigit()]; "
        "harness = [p for p in pids if b'harness-' + b'marker' in open(f'/proc/{p}/cmdline', 'rb').read()]; "
        "print(len(harness), os.environ.get('ATELIER_TEST_API_KEY'), sorted(os.environ)[:0])"
    )
    harness = (
        "import json, socket, subprocess, sys; server = socket.create_server(('127.0.0.1', 0)); "
        f"prefix = {prefix!r}; "
        f"out = subprocess.run(prefix + [sys.executable, '-c', {candidate!r}], capture_output=True, text=True); "
        "probe = \"import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\"; "
        "dial = subprocess.run(prefix + [sys.executable, '-c', probe, str(server.getsockname()[1])]); "
        "print(out.stdout.strip(), out.stderr[-300:], dial.returncode)"
    )
    argv = sandbox.wrap([sys.executable, "-c", harness, "harness-marker"], Sandbox(workspace, whole=True))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["0", "None", "[]"], result.stdout
    assert result.stdout.split()[-1] == "0", result.stdout  # the harness's loopback server was reached
