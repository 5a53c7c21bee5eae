"""The launch form's executor and per-role endpoint choices, driven with Pilot over a real config file; the spawned
command is caught at the last step so the test sees exactly what would run in the background."""

import os
import stat
from pathlib import Path

import pytest
from test_tui import drive, until

from app.agents import config
from app.tui import data
from app.tui.app import AtelierApp
from app.tui.launch import LaunchScreen
from app.tui.runs import RunsScreen
from backends.cuda_remote import config as remote

ENDPOINTS = """\
[llm]
base_url = "http://127.0.0.1:9/v1"
model = "big-model"
api_key_env = "BIG_KEY"

[roles.judge]
base_url = "http://127.0.0.1:8/v1"
model = "small-model"
api_key_env = "SMALL_KEY"
"""
EXECUTORS = """\
[executors.gpu1]
host = "gpu1.example"
user = "me"

[executors.gpu2]
host = "gpu2.example"
port = 2222
"""
SECRET = "sk-never-written-anywhere"


@pytest.fixture
def spawned(tmp_path, monkeypatch) -> list[tuple[list[str], dict]]:
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BIG_KEY", SECRET)
    calls: list[tuple[list[str], dict]] = []

    def spawn(args, log, env):
        calls.append((args, env))
        return 4242

    monkeypatch.setattr(data, "_spawn", spawn)
    return calls


def use_config(tmp_path, monkeypatch, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    return path


async def open_form(pilot, bundle: Path) -> LaunchScreen:
    await pilot.press("n")
    form = pilot.app.screen
    assert isinstance(form, LaunchScreen)
    form.query_one("#target").value = str(bundle)
    await until(pilot, lambda: form.valid, what="the target validated")
    return form


def roles(form: LaunchScreen) -> dict[str, tuple]:
    return {r: (s.value, s.disabled) for r in config.ROLES for s in [form.query_one(f"#role-{r}")]}


def test_executor_and_endpoint_per_role(toy_bundle, tmp_path, monkeypatch, spawned):
    use_config(tmp_path, monkeypatch, ENDPOINTS + EXECUTORS)

    async def script(pilot):
        form = await open_form(pilot, toy_bundle)
        executor, start = form.query_one("#executor"), form.query_one("#start")
        assert [v for _, v in executor._options] == ["", "mlx", "local", "cuda_remote:gpu1", "cuda_remote:gpu2"]
        assert "me@gpu1.example over SSH" in str(executor._options[3][0])
        assert all(disabled for _, disabled in roles(form).values()) and not start.disabled
        assert form.query_one("#role-judge").prompt == "none: offline tuner"
        form.query_one("#policy").value = "issues"
        await pilot.pause()
        assert roles(form) == {"orchestrator": ("llm", False), "implementer": ("llm", False),
                               "judge": ("roles.judge", False), "evaluator": ("llm", False)}  # fmt: skip
        assert not start.disabled and "error" not in form.query_one("#setup-check").classes
        form.query_one("#role-implementer").value = "roles.judge"
        executor.focus()
        await pilot.press("enter", "down", "down", "down", "down", "enter")
        assert executor.value == "cuda_remote:gpu2"
        form.query_one("#max_rounds").value = "3"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen), what="back on the runs screen")

    drive(AtelierApp(poll=0.3), script)
    [(args, env)] = spawned
    assert args[3:] == ["run", str(toy_bundle), "--policy", "issues", "--executor", "cuda_remote:gpu2",
                        "--max-rounds", "3"]  # fmt: skip
    written = Path(env["ATELIER_CONFIG"])
    assert written.parent == tmp_path / "home" / "logs" and stat.S_IMODE(written.stat().st_mode) == 0o600
    assert SECRET not in written.read_text() and 'api_key_env = "SMALL_KEY"' in written.read_text()
    picked = config.load(written)
    assert {r: picked.endpoint(r).model for r in config.ROLES} == {
        "orchestrator": "big-model", "implementer": "small-model", "judge": "small-model", "evaluator": "big-model"
    }  # fmt: skip
    monkeypatch.setenv("ATELIER_CONFIG", str(written))
    assert remote.load("gpu2").port == 2222


def test_llm_policies_need_an_endpoint(toy_bundle, tmp_path, monkeypatch, spawned):
    use_config(tmp_path, monkeypatch, EXECUTORS)

    async def script(pilot):
        form = await open_form(pilot, toy_bundle)
        start, check = form.query_one("#start"), form.query_one("#setup-check")
        form.query_one("#policy").value = "ralph"
        await pilot.pause()
        assert start.disabled and "error" in check.classes
        assert "the ralph policy needs an LLM endpoint" in str(check.content) and "[llm]" in str(check.content)
        assert form.query_one("#role-orchestrator").prompt == "none configured"
        await pilot.press("ctrl+s")
        assert pilot.app.screen is form and not spawned
        form.query_one("#policy").value = "tuner"
        await pilot.pause()
        assert not start.disabled and not str(check.content)
        await pilot.press("ctrl+s")

    drive(AtelierApp(poll=0.3), script)
    [(args, env)] = spawned
    assert "--executor" not in args and args[-2:] == ["--policy", "tuner"]
    assert env["ATELIER_CONFIG"] == os.environ["ATELIER_CONFIG"]


def test_endpoint_picks_are_validated_live(toy_bundle, tmp_path, monkeypatch, spawned):
    small = 'model = "small-model"\nbase_url = "http://127.0.0.1:8/v1"\n'
    every_role = "".join(f"\n[roles.{r}]\n{small}" for r in config.ROLES)
    budget = '\n[budget]\nmax_cost = 5.0\n\n[prices."small-model"]\ninput = 1.0\noutput = 2.0\n'
    use_config(tmp_path, monkeypatch, ENDPOINTS.split("[roles.judge]")[0] + every_role + budget)

    async def script(pilot):
        form = await open_form(pilot, toy_bundle)
        start, check = form.query_one("#start"), form.query_one("#setup-check")
        form.query_one("#policy").value = "issues"
        await pilot.pause()
        assert {v for v, _ in roles(form).values()} == {"roles.orchestrator"} and not start.disabled
        form.query_one("#role-evaluator").value = "llm"
        await pilot.pause()
        assert start.disabled and 'prices."big-model"' in str(check.content)
        form.query_one("#role-evaluator").value = "roles.orchestrator"
        await pilot.pause()
        assert not start.disabled and not str(check.content)

    drive(AtelierApp(poll=0.3), script)


def test_a_broken_config_reads_as_a_message(toy_bundle, tmp_path, monkeypatch, spawned):
    use_config(tmp_path, monkeypatch, "[llm]\nbase_url = 3\n")

    async def script(pilot):
        form = await open_form(pilot, toy_bundle)
        form.query_one("#policy").value = "evolve"
        await pilot.pause()
        check = str(form.query_one("#setup-check").content)
        assert "llm.base_url must be str" in check and form.query_one("#start").disabled
        assert [v for _, v in form.query_one("#executor")._options] == ["", "mlx", "local"]

    drive(AtelierApp(poll=0.3), script)


def test_resume_uses_the_config_the_run_was_launched_with(tmp_path, monkeypatch, spawned):
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    (logs / "launch-20260101-000000-1.log").write_text("atelier: run toy-1 in /somewhere\n")
    (logs / "launch-20260101-000000-1.config.toml").write_text(ENDPOINTS)
    (logs / "launch-20260101-000001-2.log").write_text("atelier: run toy-2 in /elsewhere\n")
    data.resume("toy-1")
    data.resume("toy-2")
    assert spawned[0][1]["ATELIER_CONFIG"] == str(logs / "launch-20260101-000000-1.config.toml")
    assert spawned[1][1].get("ATELIER_CONFIG") == os.environ.get("ATELIER_CONFIG")
    assert [a[3:] for a, _ in spawned] == [["resume", "toy-1"], ["resume", "toy-2"]]
