import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import git
import pytest

from app.loop import synthesize
from app.policies import evolve
from app.policies.evolve import Member, choose
from app.run import Options
from conftest import atelier, rows
from scripted_llm import ScriptedLLM, call
from test_agents import (
    FAST_PATH,
    KEY_ENV,
    PASS,
    SLOW_PATH,
    configure,
    evaluator_reading,
    faster_implementer,
    submit_change,
)
from test_target import one_repeat


@pytest.fixture
def llm(home, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-evolve-test")
    server = ScriptedLLM()
    configure(tmp_path, monkeypatch, server)
    yield server
    server.close()


FORWARD = '    forward = mx.compile(model) if settings["compile"] else model\n'


def kv_with_a_pause() -> list:
    """Keys and values kept through the knobs, but a pause in every decode: faster than the seed, slower than
    FAST_PATH."""
    return [
        call("edit", path="atelier.knobs.toml", old='default = "none"', new='default = "kv"'),
        call("edit", path="decode.py", old="import tomllib\n", new="import time\nimport tomllib\n"),
        call("edit", path="decode.py", old=FORWARD, new=FORWARD + "    time.sleep(0.08)\n"),
        submit_change("kv cache from the knobs, with a pause", ["atelier.knobs.toml", "decode.py"]),
    ]


def shown(workspace: Path, commit: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=workspace, capture_output=True, text=True).stdout


def test_parents_are_sampled_by_gain_and_the_same_seed_picks_the_same_parent():
    members = [Member("a" * 40, 1.0, 0), Member("b" * 40, 1.2, 1), Member("c" * 40, 1.6, 2)]
    picks = Counter(choose(members, f"run/{n}").round for n in range(3000))
    assert picks[2] > picks[1] > picks[0] > 0
    assert [choose(members, f"toy-20261124-120000-abcd/{n}").round for n in range(1, 9)] == [2, 2, 2, 2, 2, 1, 2, 1]
    assert choose([members[0]], "any").round == 0


@pytest.mark.slow
def test_evolve_run_grows_a_population_and_resumes_deterministically(toy, llm, home):
    llm.add("implementer", *faster_implementer(), *kv_with_a_pause(), submit_change("nothing more", []))
    llm.add("judge", PASS, PASS)
    llm.add("evaluator", evaluator_reading(), evaluator_reading())
    atelier(
        "run", str(one_repeat(toy)), "--policy", "evolve", "--max-rounds", "2", "--no-confirm", home=home, check=True
    )
    [run] = rows(home, "SELECT * FROM runs")
    first, second = rows(home, "SELECT * FROM rounds ORDER BY n")
    workspace = Path(run["dir"]) / "workspace"
    repo = git.Repo(workspace)
    seed = repo.git.rev_list("--max-parents=0", run["branch"])
    assert run["policy"] == "evolve" and first["start_commit"] == seed
    assert first["status"] == "accepted" and FAST_PATH in shown(workspace, first["commit_sha"], "decode.py")
    assert run["best_commit"] == first["commit_sha"] and first["ratio"] > 1 + run["noise"]
    assert repo.commit("refs/atelier/accepted/1").hexsha == first["commit_sha"]

    population = [Member(seed, 1.0, 0), Member(first["commit_sha"], first["ratio"], 1)]
    parent = choose(population, f"{run['id']}/2")
    assert second["start_commit"] == parent.commit
    assert [e["message"] for e in rows(home, "SELECT * FROM events WHERE kind='evolve'")] == [
        f"parent: the seed ({seed[:12]}, 1.00× the baseline), of 1 in the population",
        f"parent: {parent.name}, of 2 in the population",
    ]
    if parent.round == 1:  # a pause on top of the best: slower than its parent
        assert second["status"] == "rejected" and second["gain"] < 1
        assert repo.commit("refs/atelier/rejected/2").parents[0].hexsha == first["commit_sha"]
    else:  # keys and values from the seed: a child better than its parent, not than the best
        assert second["status"] == "accepted" and second["gain"] > 1 + run["noise"]
    assert repo.head.commit.hexsha == run["best_commit"] and not repo.is_dirty(untracked_files=True)
    memory = (Path(run["dir"]) / "memory.md").read_text()
    assert "## Round 1\n\n- child of the seed: accepted (keep keys and values whenever" in memory
    from_ = "round 1" if parent.round else "the seed"
    assert f"## Round 2\n\n- child of {from_}: {second['status']} (kv cache from the knobs" in memory

    atelier("resume", run["id"], "--max-rounds", "3", home=home, check=True)
    third = rows(home, "SELECT * FROM rounds WHERE n=3")[0]
    population += [Member(second["commit_sha"], second["ratio"], 2)] if second["status"] == "accepted" else []
    assert third["start_commit"] == choose(population, f"{run['id']}/3").commit
    assert (third["status"], third["reason"]) == ("failed", "implementer: the workspace is unchanged")
    assert rows(home, "SELECT best_commit FROM runs")[0][0] == first["commit_sha"]
    assert "## Round 3\n\n- child of " in (Path(run["dir"]) / "memory.md").read_text()


@pytest.mark.slow
def test_a_child_that_beats_its_parent_but_not_the_best_joins_the_population_only(baselined, llm, monkeypatch):
    monkeypatch.setattr(evolve, "choose", lambda members, seed: members[0])
    llm.add("implementer", *faster_implementer(), *kv_with_a_pause())
    llm.add("judge", PASS, PASS)
    llm.add("evaluator", evaluator_reading(), evaluator_reading())
    run = baselined
    run.options = Options(max_rounds=2, plateau=20)
    run.target = replace(run.target, benchmark=replace(run.target.benchmark, repeats=1))
    seed = run.workspace.head
    assert synthesize(run, evolve.Policy()) == "max rounds: 2 rounds played"
    first, second = run.store.rounds(run.id)
    assert first.start_commit == second.start_commit == seed
    assert (first.status, second.status) == ("accepted", "accepted")
    assert second.gain > 1 + run.record.noise and second.metric > run.record.best
    assert second.reason.endswith(f"; not beyond the best {run.record.best:.4g}, which stays")
    assert run.record.best_commit == first.commit_sha and run.workspace.head == first.commit_sha
    repo = run.workspace.repo
    assert [repo.commit(f"refs/atelier/accepted/{n}").hexsha for n in (1, 2)] == [first.commit_sha, second.commit_sha]
    assert repo.commit(second.commit_sha).parents[0].hexsha == seed
    assert SLOW_PATH in shown(run.workspace.path, second.commit_sha, "decode.py")
    assert [m.round for m in evolve.population(run)] == [0, 1, 2]
    trees = {run.workspace.tree_of(seed), first.tree, second.tree}
    assert {p.name for p in (run.dir / "snapshots").iterdir()} == trees
    assert "## Round 2\n\n- child of the seed: accepted (kv cache from the knobs" in (run.dir / "memory.md").read_text()
