import json
import os
import secrets
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import backends
from app import model, readonly
from app.progress import Progress
from app.store import Run, Store, StoreError, home
from app.target import Target
from app.target import load as load_target
from app.workspace import Snapshot, Workspace
from backends.executor import CommandResult, Executor, Profile, Sandbox
from backends.sandbox import SandboxError, launch_env

MEMORY = "# Memory\n\nWhat this run has learned, kept across rounds.\n"


@dataclass
class Options:
    policy: str = "tuner"
    max_rounds: int = 12
    max_minutes: float = 60.0
    plateau: int = 6
    attempts: int = 1
    baseline_repeats: int = 0  # 0: twice the target's repeats, at least 4
    confirm: bool = True  # the best stack measured against the seed when the run ends: the headline
    llm: str = ""  # local[:MODEL]: the agents' LLM served here for the run

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


@dataclass
class ActiveRun:
    """Everything a round needs: the run's record, target, workspace, executor and paths."""

    store: Store
    record: Run
    target: Target
    workspace: Workspace
    executor: Executor
    model: Path
    options: Options
    progress: Progress = field(default_factory=Progress)
    draft: Path | None = None
    warned_unconfined: bool = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def dir(self) -> Path:
        return self.record.path

    @property
    def manifest(self) -> dict[str, str]:
        return json.loads(self.record.manifest)

    def refresh(self) -> None:
        self.record = self.store.run(self.id)

    def update(self, **values) -> None:
        self.store.update_run(self.id, **values)
        self.refresh()

    def say(self, n: int | None, kind: str, message: str) -> None:
        self.store.event(self.id, n, kind, message)
        self.progress.event(n, kind, message)

    def command(self, template: str, stack: Path, inputs: Path) -> list[str]:
        there = self.executor.where
        values = {
            "python": self.executor.python,
            "workspace": there(stack),
            "readonly": there(self.dir / "readonly"),
            "inputs": there(inputs),
            "model": there(self.model),
            "draft": there(self.draft) if self.draft else "",
            "cache": there(self.dir / "cache"),
        }
        quoted = {k: shlex.quote(str(v)) for k, v in values.items()}
        draft = str(values["draft"]) or None
        serve = self.target.serve_line(quoted["python"], str(values["model"]), draft)  # reaches the harness as one word
        return shlex.split(template.format(**quoted, serve=shlex.quote(serve)))

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONDONTWRITEBYTECODE": "1", "ATELIER_RUN": self.id}

    def freeze(self) -> Snapshot:
        """The workspace's candidate as a read-only snapshot (raises SnapshotError when it cannot be one)."""
        return self.workspace.snapshot(self.workspace.stage(), self.dir / "snapshots")

    def snapshot(self, commit: str) -> Snapshot:
        return self.workspace.snapshot(self.workspace.tree_of(commit), self.dir / "snapshots")

    def execute(self, template: str, stack: Path, inputs: Path, timeout: float) -> CommandResult:
        """The harness command on a fresh writable copy of the stack; the harness starts the candidate confined."""
        x = self.executor
        with self.call(template, stack, inputs) as (command, remote, env, harness):
            result = x.run(command, cwd=remote, timeout=timeout, env=env, on_line=self.progress.output, sandbox=harness)
            x.fetch(x.where(self.dir / "cache"), self.dir / "cache")
        return result

    def profile(self, template: str, stack: Path, inputs: Path, timeout: float, out: Path) -> Profile:
        """The command once under the executor's profiler, confined as execute() runs it; out takes the raw report."""
        with self.call(template, stack, inputs) as (command, remote, env, harness):
            return self.executor.profile(command, remote, out, timeout, env, harness)

    @contextmanager
    def call(self, template: str, stack: Path, inputs: Path) -> Iterator[tuple]:
        """One harness call's command, folder where it runs, environment and sandbox, on a fresh copy of stack."""
        with self.fresh(stack) as copy:
            remote = self.prepare(copy)
            harness, env = self.confinement(copy)
            yield self.command(template, copy, inputs), remote, env, harness

    @contextmanager
    def fresh(self, stack: Path) -> Iterator[Path]:
        """A writable copy of the stack for one call, under a name that says nothing of the call."""
        copy = self.dir / "calls" / secrets.token_hex(8)
        shutil.copytree(stack, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        for folder, _, files in os.walk(copy):
            os.chmod(folder, 0o755)
            for name in files:
                if not os.path.islink(os.path.join(folder, name)):
                    os.chmod(os.path.join(folder, name), os.stat(os.path.join(folder, name)).st_mode | 0o200)
        try:
            yield copy
        finally:
            shutil.rmtree(copy, ignore_errors=True)
            self.executor.discard(copy)

    def prepare(self, stack: Path) -> Path:
        """The stack, cache, read-only inputs and models where commands run; the stack's path there."""
        x = self.executor
        remote = x.sync(stack)
        x.sync(self.dir / "cache")
        for folder in ("readonly", "hidden"):
            x.place(self.dir / folder, readonly=True)
        for model_path in (self.model, self.draft):
            if model_path:
                x.place(model_path)
        return remote

    def confinement(self, copy: Path) -> tuple[Sandbox | None, dict[str, str]]:
        """The harness's sandbox (everything read-only but the copy and the cache, a private network) and its
        environment, which names the candidate's own sandbox: the copy, the models read-only and the toolchain,
        nothing of the harness. Without a sandbox here only the tuner runs, its candidates being the bundle's own
        code with other knob values. Paths are local ones: the executor maps them to where commands run."""
        models = tuple(p for p in (self.model, self.draft) if p)
        try:
            prefix = self.executor.launcher(Sandbox(copy, readable=models, network=True))
        except SandboxError as e:
            if self.options.policy != "tuner":
                raise
            self.unconfined(str(e))
            return None, self.env
        inputs = (self.dir / "readonly", self.dir / "hidden", *models)
        harness = Sandbox(copy, writable=(self.dir / "cache",), readable=inputs, whole=True)
        return harness, {**self.env, **launch_env(prefix)}

    def unconfined(self, reason: str) -> None:
        if not self.warned_unconfined:
            self.say(None, "sandbox", f"candidates run unconfined (the tuner only): {reason}")
            self.warned_unconfined = True


def create(target: Target, options: Options, store: Store) -> ActiveRun:
    run_id = f"{target.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    run_dir = home() / "runs" / run_id
    executor = backends.executor(target.executor)
    hardware = executor.hardware()
    model_path = model.prepare(target.model, target.dir, target.executor, home() / "models")
    draft_path = model.prepare_draft(target.model, target.dir, target.executor, home() / "models")
    run_dir.mkdir(parents=True)
    branch = f"atelier/{run_id}"
    workspace = Workspace.create(run_dir / "workspace", target.dir / target.seed, branch)
    manifest = readonly.install(target, run_dir)
    (run_dir / "cache").mkdir()
    (run_dir / "memory.md").write_text(MEMORY)
    now = time.time()
    record = Run(
        id=run_id, target=target.name, target_dir=str(target.dir), executor=target.executor,
        policy=options.policy, status="starting", metric=target.benchmark.metric,
        direction=target.benchmark.direction, baseline=None, noise=None, best=None, best_commit=workspace.head,
        dir=str(run_dir), branch=branch, pid=os.getpid(), started=now, updated=now,
        options=options.to_json(), manifest=json.dumps(manifest),
    )  # fmt: skip
    store.add_run(record)
    (run_dir / "hardware.json").write_text(json.dumps(hardware, indent=2))
    store.event(run_id, None, "hardware", ", ".join(f"{k}: {v}" for k, v in hardware.items()))
    return ActiveRun(store, record, target, workspace, executor, model_path, options, draft=draft_path)


def hardware_facts(run_dir: Path) -> dict:
    """What the run recorded about the machine its benchmarks run on; empty for a run made before it did."""
    file = run_dir / "hardware.json"
    return json.loads(file.read_text()) if file.exists() else {}


def reopen(run_id: str, store: Store) -> ActiveRun:
    """An existing run, put back at its last accepted commit."""
    record = store.run(run_id)
    if record.status in ("starting", "running") and alive(record.pid):
        raise StoreError(f"run {record.id} is still going in process {record.pid}")
    target = replace(load_target(record.target_dir), executor=record.executor)
    model_path = model.prepare(target.model, target.dir, target.executor, home() / "models")
    draft_path = model.prepare_draft(target.model, target.dir, target.executor, home() / "models")
    options = Options(**json.loads(record.options))
    lock = record.path / "workspace" / ".git" / "index.lock"
    lock.unlink(missing_ok=True)
    shutil.rmtree(record.path / "calls", ignore_errors=True)  # copies a killed process left behind
    workspace = Workspace(record.path / "workspace", record.branch)
    assert record.best_commit is not None
    workspace.reset(record.best_commit)
    executor = backends.executor(target.executor)
    active = ActiveRun(store, record, target, workspace, executor, model_path, options, draft=draft_path)
    for r in store.rounds(record.id):
        if r.status == "running":
            store.end_round(record.id, r.n, "interrupted", "the run stopped during this round")
    active.update(pid=os.getpid(), status="running")
    return active


def alive(pid: int | None) -> bool:
    """Whether another process with this pid is running (a zombie is not)."""
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())
