"""`atelier serve RUN`: a run's best stack served here, in the foreground, started with the command line its export's
run.sh has (app/export.py `command`), from a fresh copy of the best commit.

The stack is agent-written code: it runs confined as a candidate does (backends/sandbox.py: its copy writable, the
model read-only, the toolchain), but on the host's network so that it can listen. Where no sandbox exists it is
refused unless the user asks for it unconfined."""

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from app import export
from app.store import Store
from app.target import load as load_target
from backends import sandbox
from backends.executor import Sandbox

FOLDER = "served"  # <run>/served/<random>: the copies being served, removed when serving stops
GRACE_S = 10


def refusal(run_id: str, unconfined: bool) -> str:
    """Why the stack cannot be served confined here and will not be served (empty when it will be)."""
    if unconfined:
        return ""
    reason = sandbox.available()
    if reason is None:
        return ""
    return (
        f"cannot confine the stack here: {reason}. The stack is agent-written code; to serve it without a sandbox "
        f"anyway, with your user's rights and files: atelier serve {run_id} --unconfined"
    )


def serve(
    store: Store, run_id: str, host: str | None, port: int | None, unconfined: bool, say: Callable[[str], None] = print
) -> int:
    """Serve until Ctrl-C or SIGTERM (0) or until the stack exits by itself (1)."""
    run = store.run(run_id)
    if not load_target(run.target_dir).serve:
        raise export.ExportError(f"target {run.target} has no serve command: its stack does not run on its own")
    if reason := refusal(run.id, unconfined):
        raise sandbox.SandboxError(reason)
    best = export.best(store, run.id)
    copy = run.path / FOLDER / secrets.token_hex(8)
    try:
        export.stack(run, copy)
        if (copy / export.MODELS).exists():
            raise export.ExportError(f"the stack has its own '{export.MODELS}' entry, where the model goes")
        models = [(best.model, best.model_name), (best.draft, best.draft_name)]
        for source, name in models:
            if source and name:
                (copy / export.MODELS).mkdir(exist_ok=True)
                (copy / export.MODELS / name).symlink_to(source.resolve())
        model, draft = f"{export.MODELS}/{best.model_name}", export.inside(best.draft_name)
        line = best.target.serve_line(shlex.quote(sys.executable), model, draft)
        argv = shlex.split(line) + (["--host", host] if host else []) + ([] if port is None else ["--port", str(port)])
        if unconfined:
            say(f"atelier: serving run {run.id} UNCONFINED (--unconfined): the stack runs with your rights and files")
            env = {k: v for k, v in os.environ.items() if k != sandbox.LAUNCH_VARIABLE}
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            readable = tuple(sorted({r for p in (best.model, best.draft) if p for r in _readable(p)}))
            argv = sandbox.launcher(Sandbox(copy, readable=readable, network=True)) + argv
            env = {}
        say(f"atelier: starting the best stack of run {run.id} (commit {(run.best_commit or '')[:12]}): {line}")
        return _foreground(argv, copy, env or None, host or "127.0.0.1", best.model_name, say)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _readable(path: Path) -> set[Path]:
    """A model and what its links point at (a hub snapshot's files are links into the cache's blobs)."""
    links = [f for f in path.rglob("*") if f.is_symlink()] if path.is_dir() else []
    return {path.resolve(), *(f.resolve().parent for f in links)}


def _foreground(argv: list[str], cwd: Path, env: dict | None, host: str, name: str, say: Callable[[str], None]) -> int:
    """The stack's output passed through; its ready line announced with the URL; Ctrl-C or SIGTERM stop it."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    try:
        for line in process.stdout:
            print(line, end="", flush=True)
            ready = _ready(line)
            if ready is not None:
                where = f" at http://{host}:{ready['port']}/v1" if "port" in ready else ""
                say(f"atelier: serving{where}, model {name!r}; Ctrl-C stops it")
        code = process.wait()
        say(f"atelier: the stack exited with code {code}")
        return 1
    except KeyboardInterrupt:
        say("atelier: stopping the stack")
        _stop(process)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            _stop(process)


def _ready(line: str) -> dict | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and message.get("ready") is True else None


def _stop(process: subprocess.Popen) -> None:
    """The stack's whole process group (bubblewrap and, through --die-with-parent, what it confines)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _interrupt(signum, frame):
    raise KeyboardInterrupt
