"""The SSH executor against a real OpenSSH server on 127.0.0.1 (this machine over SSH plays the GPU box)."""

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import fake_gpu
import pytest

from app.agents.roles import hardware
from app.evaluator import profile
from app.judge import judge
from app.run import Options, create
from app.store import Store
from app.target import check, load
from backends.cuda_remote import config
from backends.cuda_remote.executor import RemoteExecutor, described
from backends.cuda_remote.ssh import HostDown, HostKeyError, Ssh
from backends.executor import ConfigError, Sandbox
from backends.sandbox import SandboxError
from conftest import ROOT, atelier, rows, wait_for
from sshd import configure, require, serve


@pytest.fixture(scope="module", autouse=True)
def openssh():
    require()


@pytest.fixture
def own_server(tmp_path):
    s = serve(tmp_path / "own-sshd")
    yield s
    s.stop()


@pytest.fixture
def connect():
    """Opens executors by name; their shared connections are closed afterwards."""
    opened: list[RemoteExecutor] = []

    def open(name: str) -> RemoteExecutor:
        opened.append(RemoteExecutor(name))
        return opened[-1]

    yield open
    for x in opened:
        x.close()


@pytest.fixture
def remote(server, tmp_path, monkeypatch, home, connect):
    configure(server, tmp_path, monkeypatch)
    return connect("box")


def test_config_errors_name_the_key(tmp_path, monkeypatch):
    file = tmp_path / "config.toml"
    monkeypatch.setenv("ATELIER_CONFIG", str(file))
    with pytest.raises(ConfigError, match="no Atelier config"):
        config.load("box")
    cases = {
        "[executors.box]\nuser = 'me'\n": "executors.box.host: missing",
        "[executors.box]\nhost = 'h'\nport = 'x'\n": "executors.box.port: must be a port number",
        "[executors.box]\nhost = 'h'\nhots = 1\n": "executors.box.hots: unknown key",
        "[executors.box]\nhost = 'h'\nenv = {A = 1}\n": "executors.box.env: must be a table of strings",
        "[executors.a]\nhost = 'h'\n[executors.b]\nhost = 'h'\n": "name the executor as 'cuda_remote:NAME'",
    }
    for text, message in cases.items():
        file.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            config.load("" if "executors.a" in text else "box")
    file.write_text("[executors.gpu]\nhost = 'h100'\nport = 2222\n[executors.gpu.env]\nHF_HOME = '/data/hf'\n")
    assert config.load() == config.Remote("gpu", "h100", port=2222, env={"HF_HOME": "/data/hf"})


def test_target_names_a_remote_executor(toy):
    toml = toy / "target.toml"
    for executor, ok in (("cuda_remote:box", True), ("cuda_remote", True), ("mlx:box", False), ("cuda", False)):
        toml.write_text(re.sub(r'executor = ".*"', f'executor = "{executor}"', toml.read_text()))
        problems, _ = check(toy)
        assert (problems == []) is ok, (executor, problems)


def test_hardware_without_gpu_says_so(remote):
    facts = remote.hardware()
    assert facts["cores"] == str(os.cpu_count())
    assert facts["gpu"] == "none (nvidia-smi not found)"


@pytest.fixture
def gpu_box(server):
    """The test server's sessions find stand-ins for an H100 box's nvidia-smi and nsys on their PATH."""
    fake_gpu.install(server.bin, "nvidia-smi", "nsys")
    yield server
    for tool in server.bin.iterdir():
        tool.unlink()


H100 = {
    "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": "2", "gpu_memory_total_mib": "81559", "gpu_memory_used_mib": "1021",
    "driver": "550.54.15", "cuda": "12.4", "sm_clock_max_mhz": "1980", "memory_clock_max_mhz": "2619",
    "power_limit_w": "700.00",
}  # fmt: skip


def test_hardware_facts_from_nvidia_smi_reach_the_run_and_the_llm_evaluator(gpu_box, remote, toy, home):
    facts = remote.hardware()
    assert {k: facts[k] for k in H100} == H100 and facts["cores"] == str(os.cpu_count())
    run = create(replace(load(str(toy)), executor="cuda_remote:box"), Options(), Store())
    try:
        assert {k: v for k, v in json.loads((run.dir / "hardware.json").read_text()).items() if k in H100} == H100
        shown = hardware(run).splitlines()
        assert "gpu: NVIDIA H100 80GB HBM3" in shown and "power_limit_w: 700.00" in shown and "cuda: 12.4" in shown
    finally:
        run.executor.close()


def test_gpu_facts_from_nvidia_smi():
    text = (
        "NVIDIA H100 80GB HBM3, 2, 81559, 1021, 550.54.15, 1980, 2619, 700.00\n" * 2
        + "--\nCUDA Version: 12.4\n--\nx86_64\n52\n Intel(R) Xeon(R) Platinum 8480+\n2113411072\n"
    )
    assert described("h100", text) == {
        "host": "h100", "machine": "x86_64", "processor": "Intel(R) Xeon(R) Platinum 8480+", "cores": "52",
        "memory_gib": "2015.5", **H100,
    }  # fmt: skip
    failing = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n--\n--\nx86_64\n8\n"
    expected = "none (nvidia-smi: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.)"
    assert described("box", failing)["gpu"] == expected
    assert described("box", "nvidia-smi not found\n--\n--\nx86_64\n8\n")["gpu"] == "none (nvidia-smi not found)"


MATMULS = (
    "import sys\nimport torch\nx = torch.randn(96, 96)\nfor _ in range(int(sys.argv[1])):\n    x = torch.tanh(x @ x)\n"
)


def profiled_stack(remote, home) -> tuple[Path, Path]:
    ws = home / "runs" / "r1" / "workspace"
    ws.mkdir(parents=True)
    (ws / "mm.py").write_text(MATMULS + "print('METRIC s 1')\n")
    return remote.sync(ws), home / "runs" / "r1" / "profiles" / "round-1" / "candidate"


def test_profile_on_the_remote_brings_back_a_torch_profiler_table(remote, home):
    there, out = profiled_stack(remote, home)
    found = remote.profile([remote.python, "mm.py", "3"], there, out, 120)
    assert (found.tool, found.ok, remote.nsys) == ("torch.profiler (CPU)", True, False)
    assert "aten::mm" in found.summary and "Self CPU time total" in found.summary
    assert "METRIC" not in found.summary
    assert found.raw == str(remote.where(out) / "torch.txt")
    assert "aten::tanh" in Path(found.raw).read_text()  # the remote is this machine
    assert sorted(p.name for p in there.iterdir()) == ["mm.py"]


def test_profile_with_nsys_on_the_remote_brings_back_its_summary_tables(gpu_box, remote, home):
    there, out = profiled_stack(remote, home)
    found = remote.profile([remote.python, "mm.py", "2"], there, out, 120)
    assert (found.tool, found.ok) == ("nsys", True)
    summary = found.summary
    for title in ("CUDA GPU Kernel Summary (cuda_gpu_kern_sum)", "CUDA API Summary", "CUDA GPU MemOps Summary"):
        assert f"** {title}" in summary
    assert "cudaLaunchKernel" in summary and "[CUDA memcpy Host-to-Device]" in summary
    assert "gemm_epilogue_19>" in summary and "gemm_epilogue_20>" not in summary and "[5 more rows]" in summary
    assert "Processing [" not in summary and "Generating SQLite" not in summary
    assert found.raw == str(remote.where(out) / "report.nsys-rep")
    assert Path(found.raw).read_bytes() == b"stand-in for a Nsight Systems report"


def test_sync_sends_only_what_changed(remote, home):
    ws = home / "runs" / "r1" / "workspace"
    (ws / "pkg").mkdir(parents=True)
    (ws / "a.py").write_text("a = 1\n")
    (ws / "pkg" / "b.py").write_text("b = 2\n")
    dest = remote.sync(ws)
    assert dest == Path(remote.root) / "runs" / "r1" / "workspace"
    assert sorted(remote.sent) == ["a.py", "pkg/b.py"]
    remote.sync(ws)
    assert remote.sent == []
    (ws / "pkg" / "b.py").write_text("b = 3\n")
    remote.sync(ws)
    assert remote.sent == ["pkg/b.py"]
    assert (dest / "pkg" / "b.py").read_text() == "b = 3\n"


def test_models_are_sent_with_their_links_resolved_and_put_back(remote, tmp_path):
    snapshot = tmp_path / "hub" / "snapshots" / "abc"
    (tmp_path / "hub" / "blobs").mkdir(parents=True)
    (tmp_path / "hub" / "blobs" / "f00").write_text('{"model_type": "llama"}')
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to("../../blobs/f00")
    there = remote.place(snapshot)
    copy = there / "config.json"
    assert there == remote.where(snapshot) and not copy.is_symlink()
    assert copy.read_text() == '{"model_type": "llama"}'
    copy.write_text("changed by a candidate")
    (there / "extra.bin").write_text("x")
    remote.place(snapshot)
    assert copy.read_text() == '{"model_type": "llama"}' and not (there / "extra.bin").exists()


def test_readonly_inputs_are_frozen_and_checked_on_the_remote(remote, home):
    inputs = home / "runs" / "r1" / "readonly"
    inputs.mkdir(parents=True)
    (inputs / "check.py").write_text("print('checker')\n")
    there = remote.place(inputs, readonly=True)
    copy = there / "check.py"
    assert copy.read_text() == "print('checker')\n"
    assert copy.stat().st_mode & 0o222 == 0 and there.stat().st_mode & 0o222 == 0
    assert remote.run(["true"], there, 30).ok
    copy.chmod(0o644)
    copy.write_text("print('tampered')\n")
    result = remote.run(["true"], there, 30)
    assert result.exit_code == 0 and not result.ok
    assert "check.py: modified" in result.failure
    assert "CHECK FAIL read-only input readonly/check.py: modified" in result.output
    remote.place(inputs, readonly=True)
    assert copy.read_text() == "print('checker')\n" and copy.stat().st_mode & 0o222 == 0
    assert remote.run(["true"], there, 30).ok


def test_command_streams_output_and_returns_its_exit_code(remote, tmp_path):
    seen: list[str] = []
    script = "import os; print('out', flush=True); print('err', os.environ['ATELIER_REMOTE_TEST'], file=__import__('sys').stderr); raise SystemExit(3)"  # noqa: E501
    result = remote.run([sys.executable, "-c", script], Path(remote.root), 60, env={"X": "1"}, on_line=seen.append)
    assert result.exit_code == 3 and not result.timed_out
    assert seen == ["out", "err yes"] and result.output == "out\nerr yes"


def test_timeout_kills_the_remote_group(remote, tmp_path):
    marker = tmp_path / "pgid"
    code = f"import os, subprocess, time; subprocess.Popen(['sleep', '300']); open({str(marker)!r}, 'w').write(str(os.getpgid(0))); time.sleep(300)"  # noqa: E501
    start = time.monotonic()
    result = remote.run([sys.executable, "-c", code], Path(remote.root), 3)
    assert result.timed_out and result.exit_code is None and time.monotonic() - start < 15
    pgid = int(marker.read_text())
    assert pgid != os.getpgid(0)
    assert not group_alive(pgid, within=5)


def group_alive(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


def test_sandboxed_command_is_confined_on_the_remote(remote, server, home):
    ws = home / "runs" / "r1" / "workspace"
    ws.mkdir(parents=True)
    there = remote.sync(ws)
    code = (
        "import os, socket\nopen('ok.txt', 'w').write('ok')\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {server.port}), timeout=5)\n    print('network')\n"
        "except OSError:\n    print('no network')\n"
        "print(os.environ.get('SSH_CONNECTION'), os.environ['ATELIER_REMOTE_TEST'], os.environ['ROUND'])\n"
        "open('/etc/atelier-remote-test', 'w')\n"
    )
    command = [sys.executable, "-c", code]
    result = remote.run(command, there, 120, env={"ROUND": "3"}, sandbox=Sandbox(ws))
    assert result.exit_code == 1 and "Read-only file system" in result.output, result.output
    assert {"no network", "None yes 3"} <= set(result.output.splitlines())
    assert (there / "ok.txt").read_text() == "ok"
    unconfined = remote.run([sys.executable, "-c", "import os; print(os.environ['SSH_CONNECTION'])"], there, 60)
    assert unconfined.ok and unconfined.output.startswith("127.0.0.1 ")
    with pytest.raises(SandboxError, match="runs in its workspace"):
        remote.run(["true"], Path(remote.root), 10, sandbox=Sandbox(ws))


def test_sandboxed_command_is_killed_at_the_timeout(remote, home):
    ws = home / "runs" / "r1" / "workspace"
    ws.mkdir(parents=True)
    marker = f"{secrets.randbelow(10**6) + 1000}.5"
    start = time.monotonic()
    result = remote.run(["sh", "-c", f"sleep {marker} & sleep {marker}"], remote.sync(ws), 2, sandbox=Sandbox(ws))
    assert result.timed_out and time.monotonic() - start < 30
    deadline = time.monotonic() + 5
    while any(marker in cmdline(p) for p in Path("/proc").glob("[0-9]*")):
        assert time.monotonic() < deadline, "a sandboxed process outlived the timeout"
        time.sleep(0.1)


def cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_text()
    except OSError:
        return ""


def numbered(n: int, pause: float) -> list[str]:
    loop = f"for i in range({n}):\n    print(f'line {{i}}', flush=True)\n    time.sleep({pause})\n"
    return [sys.executable, "-c", f"import time\n{loop}raise SystemExit(7)"]


def drop(ssh: Ssh) -> int:
    """Kills this side's shared connection, as a network drop would end it."""
    pid = ssh.master()
    assert pid is not None and pid > 1
    os.kill(pid, signal.SIGKILL)
    return pid


def test_dropped_connection_reattaches_and_collects_the_result(remote):
    masters: list[int] = []

    def drop_thrice(line: str) -> None:
        if line in ("line 10", "line 25", "line 39"):
            masters.append(drop(remote.ssh))
        if line == "line 39":
            time.sleep(1.5)

    result = remote.run(numbered(40, 0.1), Path(remote.root), 120, on_line=drop_thrice)
    assert len(set(masters)) == 3
    assert result.exit_code == 7 and not result.timed_out
    assert result.output.splitlines() == [f"line {i}" for i in range(40)]


def test_killed_sshd_is_a_clean_failure(own_server, tmp_path, monkeypatch, home, connect):
    configure(own_server, tmp_path, monkeypatch, "dying")
    x = connect("dying")

    def kill_server(line: str) -> None:
        if line == "line 3":
            own_server.stop()
            drop(x.ssh)

    start = time.monotonic()
    with pytest.raises(HostDown) as failure:
        x.run(numbered(600, 0.1), Path(x.root), 120, env={"ATELIER_RUN": "toy-1"}, on_line=kill_server)
    message = str(failure.value)
    assert "unreachable after 3 attempts" in message and "atelier resume toy-1" in message
    assert time.monotonic() - start < 30
    left = int(re.search(r"\(pid (\d+)\)", message).group(1))
    assert group_alive(left, within=0.1)
    own_server.start()
    seen: list[str] = []
    again = connect("dying")
    assert again.run(["true"], Path(again.root), 30, env={"ATELIER_RUN": "toy-1"}, on_line=seen.append).ok
    assert seen == ["atelier: stopped 1 command(s) an earlier process of toy-1 left running on atelier-test-"
                    f"{own_server.port}"]  # fmt: skip
    assert not group_alive(left, within=5)


def test_host_key_mismatch_refuses_with_what_to_check(server, tmp_path, monkeypatch, home):
    configure(server, tmp_path, monkeypatch)
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = server.dir / "known_hosts"
    kept = known.read_text()
    known.write_text(f"[127.0.0.1]:{server.port} {(tmp_path / 'other_key.pub').read_text()}")
    try:
        x = RemoteExecutor("box")
        x.ssh.sockets = Path(tempfile.mkdtemp(prefix="atelier-test-"))
        with pytest.raises(HostKeyError) as failure:
            x.hardware()
        message = str(failure.value)
        assert f"does not match {known} line 1" in message
        assert f"ssh-keygen -R '[127.0.0.1]:{server.port}'" in message
        known.write_text("")
        with pytest.raises(HostKeyError, match="no known host key"):
            x.hardware()
    finally:
        known.write_text(kept)


def test_host_key_checking_turned_off_by_the_user_is_said(server, tmp_path, monkeypatch, home, connect):
    configure(server, tmp_path, monkeypatch)
    with (tmp_path / "ssh_config_box").open("a") as f:
        f.write("  StrictHostKeyChecking no\n")
    assert connect("box").hardware()["host_key_check"] == "StrictHostKeyChecking no (from your ssh config)"
    result = atelier("remote", "check", "box", home=home)
    assert re.search(r"missing +host key +StrictHostKeyChecking no", result.stdout)


def test_remote_check_reports_what_it_finds(server, tmp_path, monkeypatch, home):
    configure(server, tmp_path, monkeypatch)
    result = atelier("remote", "check", "box", home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(re.match(r"ok +python +3\.\d+", line) for line in lines)
    assert any(re.match(r"ok +rsync", line) for line in lines)
    assert any(re.match(r"missing +GPU +none \(nvidia-smi not found\)", line) for line in lines)
    assert "fix: install the NVIDIA driver" in result.stdout
    assert any(re.match(r"missing +nsys +not found \(profiles use torch.profiler\)", line) for line in lines)
    assert "fix: install Nsight Systems" in result.stdout
    assert any(re.match(r"ok +profiler +torch.profiler importable", line) for line in lines)
    assert lines[-1] == "box: usable"
    file = tmp_path / "config.toml"
    file.write_text(file.read_text().replace(f'python = "{sys.executable}"', 'python = "/nowhere/python3"'))
    broken = atelier("remote", "check", "box", home=home)
    assert broken.returncode == 2 and re.search(r"MISSING +python +not found \(/nowhere/python3\)", broken.stdout)
    assert "fix: install Python 3 on" in broken.stdout and broken.stdout.splitlines()[-1] == "box: not usable"
    missing = atelier("remote", "check", "nope", home=home)
    assert missing.returncode == 2 and "no [executors.nope] table" in missing.stderr


@pytest.mark.slow
def test_the_evaluator_profiles_a_confined_candidate_over_ssh(remote, toy, home):
    run = create(replace(load(str(toy)), executor="cuda_remote:box"), Options(policy="ralph"), Store())
    try:
        seed = run.snapshot(run.workspace.head).path
        assert judge(run, None, seed).passed  # the benchmark checks its sample against the checker's reference
        found, saved = profile(run, 1, seed)
    finally:
        run.executor.close()
    tool = "cProfile (torch.profiler saw no torch operator)"  # the toy stack is MLX
    assert (found.tool, found.ok) == (tool, True), found.summary
    there = remote.where(run.dir / "profiles" / "round-1" / "candidate" / "torch.txt")
    text = saved.read_text()
    assert text.startswith(f"# {tool}, candidate of round 1\nfull report (cuda_remote:box): {there}\n")
    assert "Ordered by: internal time" in text and "bench.py" in there.read_text()


def test_remote_check_reports_the_gpu_and_nsys(gpu_box, tmp_path, monkeypatch, home):
    configure(gpu_box, tmp_path, monkeypatch)
    result = atelier("remote", "check", "box", home=home)
    gpu = "NVIDIA H100 80GB HBM3 ×2, 81559 MiB, driver 550.54.15, CUDA 12.4, 700.00 W limit"
    assert re.search(rf"^ok +GPU +{re.escape(gpu)}$", result.stdout, re.M), result.stdout
    assert re.search(r"^ok +nsys +NVIDIA Nsight Systems version 2024\.2\.1", result.stdout, re.M)


@pytest.mark.slow
def test_toy_run_over_ssh(server, toy, tmp_path, monkeypatch, home):
    configure(server, tmp_path, monkeypatch)
    toml = toy / "target.toml"
    toml.write_text(toml.read_text().replace('executor = "mlx"', 'executor = "cuda_remote:box"'))
    result = atelier("run", str(toy), "--max-rounds", "1", "--no-confirm", home=home, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = rows(home, "SELECT * FROM runs")
    assert run["status"] == "done" and run["executor"] == "cuda_remote:box" and run["baseline"] > 0
    [round] = rows(home, "SELECT * FROM rounds")
    assert round["status"] in ("accepted", "rejected") and round["metric"] > 0
    verdicts = rows(home, "SELECT role, passed FROM verdicts")
    assert ("judge", 1) in [tuple(v) for v in verdicts] and "evaluator" in [v["role"] for v in verdicts]
    there = tmp_path / "remote" / "runs" / run["id"]
    assert (there / "calls").is_dir() and not list((there / "calls").iterdir())  # each call's copy, removed after
    assert (there / "readonly" / "check.py").stat().st_mode & 0o222 == 0
    assert list((there / "cache").glob("reference-*.json"))
    assert list((Path(run["dir"]) / "cache").glob("reference-*.json"))
    assert '"host": "atelier-test-' in (Path(run["dir"]) / "hardware.json").read_text()


def test_unreachable_host_fails_before_a_run_is_created(own_server, toy, tmp_path, monkeypatch, home):
    configure(own_server, tmp_path, monkeypatch)
    own_server.stop()
    toml = toy / "target.toml"
    toml.write_text(toml.read_text().replace('executor = "mlx"', 'executor = "cuda_remote:box"'))
    result = atelier("run", str(toy), home=home, timeout=120)
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("atelier: error:")]
    assert "unreachable after 3 attempts" in error and "Connection refused" in error
    assert not (home / "runs").exists() or not list((home / "runs").iterdir())


@pytest.mark.slow
def test_host_lost_mid_round_fails_cleanly_and_resumes(own_server, toy, tmp_path, monkeypatch, home):
    configure(own_server, tmp_path, monkeypatch)
    env = {**os.environ, "ATELIER_HOME": str(home)}
    argv = [sys.executable, "-m", "app", "run", str(toy), "--executor", "cuda_remote:box", "--max-rounds", "1"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(home, "SELECT * FROM events WHERE kind='judge' AND round=1", timeout=600)
        own_server.stop()
        drop(Ssh(config.load("box")))
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "unreachable after 3 attempts" in stderr
    [run] = rows(home, "SELECT * FROM runs")
    assert run["status"] == "failed"
    said = [e["message"] for e in rows(home, "SELECT * FROM events WHERE kind='stop'")]
    assert said == [f"carry on with: atelier resume {run['id']}"]
    own_server.start()
    atelier("resume", run["id"], home=home, timeout=900, check=True)
    statuses = {r["n"]: r["status"] for r in rows(home, "SELECT * FROM rounds")}
    assert statuses[1] == "interrupted" and statuses[2] in ("accepted", "rejected")
    assert rows(home, "SELECT status FROM runs")[0][0] == "done"
