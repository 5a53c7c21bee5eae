"""`atelier export`: the best accepted stack of a run as a standalone folder."""

import shlex
import shutil
from dataclasses import replace
from pathlib import Path

from app import knobs, model
from app.store import Store
from app.target import load as load_target
from app.workspace import Workspace


class ExportError(Exception):
    pass


def export(store: Store, run_id: str, dest: Path) -> Path:
    run = store.run(run_id)
    if dest.exists() and any(dest.iterdir()):
        raise ExportError(f"{dest} exists and is not empty")
    target = replace(load_target(run.target_dir), executor=run.executor)
    assert run.best_commit is not None
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    Workspace(run.path / "workspace", run.branch).export(run.best_commit, partial)
    (partial / ".gitignore").unlink(missing_ok=True)
    models = Path(run.dir).parents[1] / "models"
    model_path = model.prepare(target.model, target.dir, target.executor, models)
    draft_path = model.prepare_draft(target.model, target.dir, target.executor, models)
    command = _serve_command(target.serve, model_path, draft_path)
    if command:
        (partial / "run.sh").write_text(f'#!/bin/sh\ncd "$(dirname "$0")"\nexec {command} "$@"\n')
        (partial / "run.sh").chmod(0o755)
    readme = partial / "README.md"
    own = readme.read_text() if readme.exists() else ""
    readme.write_text(_readme(run, target.name, command, knobs.settings(partial)) + own)
    if dest.exists():
        dest.rmdir()
    partial.rename(dest)
    return dest


def _serve_command(template: str, model_path: Path, draft_path: Path | None) -> str:
    if not template:
        return ""
    draft = shlex.quote(str(draft_path)) if draft_path else "''"
    values = {"python": "${PYTHON:-python3}", "model": shlex.quote(str(model_path)), "draft": draft}
    return template.format(**values)


def _readme(run, target: str, command: str, settings: dict) -> str:
    ratio = f"{run.best_ratio:.2f}× the baseline" if run.best_ratio else "no measured gain"
    lines = [
        f"# {target} stack from Atelier run {run.id}",
        "",
        f"Synthesized by Atelier for the target `{target}` ({run.executor}); commit `{run.best_commit[:12]}` of "
        f"branch `{run.branch}`.",
        f"Benchmark `{run.metric}` ({run.direction} is better): baseline {run.baseline:.4g}, this stack "
        f"{run.best:.4g}, {ratio}."
        if run.baseline and run.best
        else "No benchmark figures recorded.",
        "",
    ]
    if command:
        lines += ["## Run", "", "```sh", "./run.sh", "```", "", f"which runs `{command}`", ""]
        lines += ["(set `PYTHON` to an interpreter that has the stack's packages).", ""]
    if settings:
        lines += ["## Knob settings", "", *[f"- `{k}` = `{v!r}`" for k, v in settings.items()], ""]
    return "\n".join(lines) + "\n"
