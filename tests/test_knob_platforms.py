"""Knobs that know their platform: the tuner never spends a round on a knob that cannot act where the candidate
runs. The platform is a stand-in (ATELIER_PLATFORM), the walk is the real tuner on a real run and store."""

import itertools
import shutil
import sys

import pytest

from app import knobs
from app.policies import tuner
from app.run import Options, create
from app.store import Store
from app.target import load
from backends import platform
from backends.platform import STAND_IN
from conftest import ROOT

KNOBS = """
[weights]
values = ["q4", "fp32"]
default = "q4"

[blas]
values = ["reference", "openblas"]
default = "reference"
platforms = ["linux-cpu"]

[compile]
values = ["off", "on"]
default = "off"
"""


def walk(run) -> list[dict]:
    """Every change the tuner proposes when each one measures slower, until it has nothing left."""
    policy, proposed = tuner.Policy(), []
    for n in itertools.count(1):
        found = policy.next(run)
        if found is None:
            return proposed
        task, start = found
        run.store.start_round(run.id, n, task.title, task.proposal, start)
        run.store.end_round(run.id, n, "rejected", "measured slower", gain=0.5)
        proposed.append(task.proposal["changes"])
    return proposed


@pytest.fixture
def run(toy, home):
    made = create(load(str(toy)), Options(), Store())
    (made.workspace.path / knobs.FILE).write_text(KNOBS)
    return made


@pytest.mark.parametrize(("platform", "blas"), [("macos-metal", False), ("cuda", False), ("linux-cpu", True)])
def test_the_tuner_proposes_a_knob_only_where_it_acts(run, monkeypatch, platform, blas):
    monkeypatch.setenv(STAND_IN, platform)
    proposed = walk(run)
    assert {"weights": "fp32"} in proposed and {"compile": "on"} in proposed
    assert any("blas" in changes for changes in proposed) == blas, proposed


def test_a_remote_cuda_executor_is_the_cuda_platform_whatever_runs_here(monkeypatch):
    monkeypatch.setenv(STAND_IN, "macos-metal")
    assert platform.of("cuda_remote:box") == "cuda" and platform.of("mlx") == "macos-metal"
    monkeypatch.delenv(STAND_IN)
    assert platform.here() == ("linux-cpu" if sys.platform != "darwin" else platform.here())


def test_an_unknown_platform_is_named(tmp_path):
    (tmp_path / knobs.FILE).write_text(KNOBS.replace('["linux-cpu"]', '["linux-cpu", "windows"]'))
    with pytest.raises(knobs.KnobError, match=r"knob 'blas' platforms \['windows'\]: expected some of linux-cpu"):
        knobs.read(tmp_path)


@pytest.mark.parametrize("where", ["macos-metal", "linux-cpu"])
@pytest.mark.parametrize("bundle", ["json-tiny", "predicted-outputs-mlx", "showo2-tiny"])
def test_the_tuner_proposes_blas_for_a_bundled_seed_only_on_a_linux_cpu(run, monkeypatch, bundle, where):
    shutil.copy(ROOT / "targets" / bundle / "seed" / knobs.FILE, run.workspace.path / knobs.FILE)
    monkeypatch.setenv(STAND_IN, where)
    proposed = walk(run)
    assert proposed and any("blas" in c for c in proposed) == (where == "linux-cpu"), proposed
