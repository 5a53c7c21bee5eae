import os
import signal
import subprocess
import sys

import git

from conftest import ROOT, atelier, rows, wait_for
from test_target import one_repeat


def test_sigkill_mid_round_then_resume_loses_nothing(toy, home):
    env = {**os.environ, "ATELIER_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", str(one_repeat(toy)), "--max-rounds", "2", "--no-confirm"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(home, "SELECT * FROM events WHERE round=2 AND kind='implement'")  # the candidate is being judged
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    [run] = rows(home, "SELECT * FROM runs")
    [first] = rows(home, "SELECT * FROM rounds WHERE n=1")
    assert first["status"] == "accepted" and run["best_commit"] == first["commit_sha"]
    assert run["status"] == "running"

    resumed = atelier("resume", run["id"], home=home, check=True)
    assert f"resuming {run['id']} from commit {first['commit_sha'][:12]}" in resumed.stdout

    [after] = rows(home, "SELECT * FROM runs")
    statuses = {r["n"]: r["status"] for r in rows(home, "SELECT * FROM rounds")}
    assert statuses[1] == "accepted" and statuses[2] == "interrupted"
    assert rows(home, "SELECT commit_sha FROM rounds WHERE n=1")[0][0] == first["commit_sha"]
    assert after["status"] == "done"
    repo = git.Repo(after["dir"] + "/workspace")
    assert repo.head.commit.hexsha == after["best_commit"]
    assert repo.is_ancestor(first["commit_sha"], after["best_commit"])
    assert not repo.is_dirty(untracked_files=True)
    assert not list((home / "runs").rglob("*.partial"))
