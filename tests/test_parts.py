import os
import shutil
import sqlite3
import sys
import time

import pytest

from app import knobs, readonly, target
from app.bench.acceptancebench import noise_band
from app.evaluator import parse_metrics
from app.store import SCHEMA_VERSION, Store, StoreError
from app.workspace import Workspace
from backends.local.executor import TorchExecutor
from backends.mlx.executor import LocalExecutor


@pytest.fixture
def workspace(tmp_path, toy):
    return Workspace.create(tmp_path / "ws", toy / "seed", "atelier/test")


def test_workspace_commit_reject_reset(workspace):
    seed = workspace.head
    knobs.set_default(workspace.path, "cache", "kv")
    accepted = workspace.commit("round 1")
    assert workspace.repo.active_branch.name == "atelier/test"
    (workspace.path / "decode.py").write_text("broken")
    (workspace.path / "junk.txt").write_text("x")
    rejected = workspace.reject(2, "round 2", back_to=accepted)
    assert workspace.head == accepted and not workspace.changed()
    assert workspace.rejected() == ["refs/atelier/rejected/2"]
    assert workspace.repo.commit(rejected).parents[0].hexsha == accepted
    assert "broken" in workspace.repo.git.show(f"{rejected}:decode.py")
    workspace.reset(seed)
    assert knobs.settings(workspace.path) == {"cache": "none", "compile": False}


def test_workspace_export_is_the_commit(workspace, tmp_path):
    knobs.set_default(workspace.path, "cache", "kv")
    sha = workspace.commit("kv")
    (workspace.path / "decode.py").write_text("uncommitted")
    workspace.export(sha, tmp_path / "out")
    assert knobs.settings(tmp_path / "out")["cache"] == "kv"
    assert "uncommitted" not in (tmp_path / "out" / "decode.py").read_text()


def test_knobs_keep_comments_and_reject_bad_values(tmp_path):
    (tmp_path / knobs.FILE).write_text('# tuned by hand\n[mode]\nvalues = ["a", "b"]\ndefault = "a"\n')
    knobs.set_default(tmp_path, "mode", "b")
    assert (tmp_path / knobs.FILE).read_text().startswith("# tuned by hand")
    assert knobs.settings(tmp_path) == {"mode": "b"}
    (tmp_path / knobs.FILE).write_text('[mode]\nvalues = ["a"]\ndefault = "z"\n')
    with pytest.raises(knobs.KnobError, match="default 'z' is not among its values"):
        knobs.read(tmp_path)


def test_executor_streams_and_exits(tmp_path):
    lines = []
    result = LocalExecutor().run(
        [sys.executable, "-c", "print('a'); print('b'); raise SystemExit(3)"], tmp_path, 30, on_line=lines.append
    )
    assert (result.exit_code, lines, result.timed_out) == (3, ["a", "b"], False)


def test_executor_kills_the_whole_group_at_timeout(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    start = time.monotonic()
    result = LocalExecutor().run([sys.executable, "-c", script], tmp_path, 3)
    assert result.timed_out and time.monotonic() - start < 20
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not alive(child)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = open(f"/proc/{pid}/status").read()
    return "State:\tZ" not in status


def test_hardware_facts():
    facts = LocalExecutor().hardware()
    assert facts["mlx_device"].startswith("Device(") and float(facts["memory_gib"]) > 0


def test_local_profiles_name_their_tool_and_their_failures(tmp_path):
    x, out = LocalExecutor(), tmp_path / "out"
    (tmp_path / "hot.py").write_text("import sys\ndef hot():\n    return sum(i * i for i in range(300_000))\n"
                                     "hot()\nprint('METRIC s', sys.argv[1:])\n")  # fmt: skip
    found = x.profile([x.python, "-u", "-m", "hot", "a"], tmp_path, out, 60)
    assert (found.tool, found.ok, found.raw) == ("cProfile", True, str(out / "cProfile.txt"))
    assert "Ordered by: internal time" in found.summary and "hot.py:3(<genexpr>)" in found.summary
    assert "METRIC" not in found.summary and "hot.py:2(hot)" in (out / "cProfile.txt").read_text()
    failed = x.profile([x.python, "-c", "import sys; sys.exit(3)"], tmp_path, out, 60)
    assert not failed.ok and failed.summary.startswith("the benchmark failed under cProfile (exit code 3)")
    shell = x.profile(["sh", "-c", "true"], tmp_path, out, 60)
    assert shell.tool == "none" and "`sh` is not a Python command and nsys is not installed" in shell.summary
    assert TorchExecutor().profiler_tool() == ("nsys" if shutil.which("nsys") else "torch")


def test_metrics_and_noise():
    assert parse_metrics("noise\nMETRIC latency_s 1.5\nMETRIC tps x\nMETRIC tps 3") == {"latency_s": 1.5, "tps": 3.0}
    assert noise_band([1.0, 1.1, 0.9, 1.0]) == pytest.approx(0.1)
    assert noise_band([2.0, 2.0]) == 0.01


def test_readonly_detects_and_restores(tmp_path, toy):
    t = target.load(str(toy))
    expected = readonly.install(t, tmp_path)
    assert readonly.verify(tmp_path, expected) == []
    check = tmp_path / "readonly" / "check.py"
    check.chmod(0o644)
    check.write_text("print('CHECK PASS')")
    (tmp_path / "hidden" / "extra.json").write_text("{}")
    assert sorted(readonly.verify(tmp_path, expected)) == ["hidden/extra.json: added", "readonly/check.py: modified"]
    readonly.restore(t, tmp_path, expected)
    assert readonly.verify(tmp_path, expected) == []


def test_store_refuses_other_schema_version(tmp_path):
    Store(tmp_path / "a.db").close()
    db = sqlite3.connect(tmp_path / "a.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"store schema version 99, this Atelier reads up to {SCHEMA_VERSION};"):
        Store(tmp_path / "a.db")


def test_store_migrates_a_version_1_store(tmp_path):
    db = sqlite3.connect(tmp_path / "a.db")
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE rounds (run_id TEXT, n INTEGER, task TEXT, proposal TEXT, status TEXT, start_commit TEXT,"
        " commit_sha TEXT, metric REAL, ratio REAL, reason TEXT, started REAL, ended REAL, PRIMARY KEY (run_id, n));"
        "INSERT INTO rounds VALUES ('r', 1, 'w=f', '{}', 'accepted', 'c0', 'c1', 1.5, 2.0, 'ok', 0, 1);"
        "CREATE TABLE verdicts (run_id TEXT, round INTEGER, role TEXT, passed INTEGER, reasons TEXT, ts REAL);"
    )
    db.commit()
    db.close()
    store = Store(tmp_path / "a.db")
    [old] = store.rounds("r")
    assert (old.task, old.ratio, old.gain, old.tree) == ("w=f", 2.0, None, None)
    assert store.db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    assert store.issues("r") == []
    assert store.add_issue("r", "try kv", "keep keys", "orchestrator", 1) == 1
    store.add_verdict("r", 1, "judge", False, ["hidden case set 1 failed"], ["prompt 0 differs"])
    assert store.verdicts("r", 1)[0]["detail"] == '["prompt 0 differs"]'


def test_store_is_wal(tmp_path):
    store = Store(tmp_path / "a.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_that_is_not_a_database(tmp_path):
    (tmp_path / "a.db").write_text("not sqlite " * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(tmp_path / "a.db")


TWO_KNOBS = '[w]\nvalues = ["q", "f"]\ndefault = "q"\n[b]\nvalues = ["x", "o"]\ndefault = "x"\n'
THREE_KNOBS = TWO_KNOBS + '[c]\nvalues = ["y", "z"]\ndefault = "y"\n'


def tuner_run(tmp_path, declared: str):
    """A run as the tuner sees it: knobs in a workspace, a store, a best commit."""
    from types import SimpleNamespace

    (tmp_path / knobs.FILE).write_text(declared)
    record = SimpleNamespace(best_commit="c0")
    return SimpleNamespace(
        id="r",
        store=Store(tmp_path / "a.db"),
        workspace=SimpleNamespace(path=tmp_path),
        record=record,
        executor=SimpleNamespace(kind="mlx"),
    )


def test_tuner_walks_one_knob_then_pairs_and_remembers(tmp_path):
    from app.policies.tuner import Policy

    run = tuner_run(tmp_path, TWO_KNOBS)
    store = run.store
    tuner = Policy()
    titles = []
    for n in range(1, 5):
        picked = tuner.next(run)
        if picked is None:
            break
        task, start = picked
        titles.append(task.title)
        store.start_round("r", n, task.title, task.proposal, start)
        store.end_round("r", n, "rejected", "no gain")
    assert titles == ["w=f", "b=o", "w=f, b=o"]
    assert tuner.next(run) is None
    store.start_round("r", 4, "x", {"changes": {}, "from": {}, "setting": {}}, "c0")
    store.end_round("r", 4, "interrupted", "stopped")
    assert tuner.next(run) is None


def test_tuner_pairs_a_promising_change_before_other_single_changes(tmp_path):
    from app.policies.tuner import Policy

    run = tuner_run(tmp_path, THREE_KNOBS)
    store = run.store
    gains = {"w=f": 1.1, "w=f, b=o": 0.9}
    titles = []
    for n in range(1, 8):
        picked = Policy().next(run)
        if picked is None:
            break
        titles.append(picked[0].title)
        store.start_round("r", n, picked[0].title, picked[0].proposal, "c0")
        store.end_round("r", n, "rejected", "within noise", gain=gains.get(picked[0].title, 0.95))
    assert titles == ["w=f", "w=f, b=o", "w=f, c=z", "b=o", "c=z", "b=o, c=z"]


def test_tuner_tries_a_change_that_lost_before_after_the_fresh_ones(tmp_path):
    from app.policies.tuner import Policy

    run = tuner_run(tmp_path, THREE_KNOBS)
    store = run.store
    for n, (title, status, gain) in enumerate([("w=f", "rejected", 0.5), ("b=o", "accepted", 2.0)], 1):
        task, _ = Policy().next(run)
        assert task.title == title
        store.start_round("r", n, title, task.proposal, "c0")
        store.end_round("r", n, status, "measured", gain=gain)
        if status == "accepted":
            knobs.set_default(tmp_path, "b", "o")
    assert Policy().next(run)[0].title == "c=z"
    store.start_round("r", 3, "c=z", Policy().next(run)[0].proposal, "c0")
    store.end_round("r", 3, "rejected", "within noise", gain=0.97)
    assert Policy().next(run)[0].title == "w=f"


def test_tuner_leaves_the_way_back_from_an_accepted_change_for_last(tmp_path):
    from app.policies.tuner import Policy

    run = tuner_run(tmp_path, THREE_KNOBS)
    for n, (name, value) in enumerate([("w", "f"), ("b", "o")], 1):
        task, _ = Policy().next(run)
        assert task.title == f"{name}={value}"
        run.store.start_round("r", n, task.title, task.proposal, "c0")
        run.store.end_round("r", n, "accepted", "faster", gain=2.0)
        knobs.set_default(tmp_path, name, value)
    assert [Policy().next(run)[0].title] == ["c=z"]


def test_tuner_turns_on_what_a_knob_needs_to_act(tmp_path):
    from app.policies.tuner import Policy

    gated = THREE_KNOBS.replace('default = "x"\n', 'default = "x"\nwhen = { w = "f" }\n')
    run = tuner_run(tmp_path, gated)
    assert [k.when for k in knobs.read(tmp_path)] == [{}, {"w": ["f"]}, {}]
    for n, (title, gain) in enumerate([("w=f", 0.9), ("b=o, w=f", 3.0)], 1):
        task, _ = Policy().next(run)
        assert task.title == title
        run.store.start_round("r", n, title, task.proposal, "c0")
        run.store.end_round("r", n, "accepted" if gain > 1 else "rejected", "measured", gain=gain)
    knobs.set_default(tmp_path, "w", "f")
    knobs.set_default(tmp_path, "b", "o")
    assert Policy().next(run)[0].title == "c=z", "w=q would undo half of an accepted change: it waits"


def test_knob_active_when_names_an_unknown_knob_or_value(tmp_path):
    (tmp_path / knobs.FILE).write_text(TWO_KNOBS.replace('default = "x"\n', 'default = "x"\nwhen = { v = "f" }\n'))
    with pytest.raises(knobs.KnobError, match="unknown knob 'v'"):
        knobs.read(tmp_path)
    (tmp_path / knobs.FILE).write_text(TWO_KNOBS.replace('default = "x"\n', 'default = "x"\nwhen = { w = "z" }\n'))
    with pytest.raises(knobs.KnobError, match="not among its values"):
        knobs.read(tmp_path)
