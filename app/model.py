import hashlib
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from app.target import Model

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
RECIPE = "generate.py"


# Meta's repositories carry a second, consolidated copy of the weights for their own code; stacks load the
# Hugging Face layout, so fetching (and sending to a remote) that copy would double the download.
LEGACY_CHECKPOINTS = ["original/*"]


class ModelError(Exception):
    pass


def locate(model: Model, base: Path) -> Path | str:
    """The model's file or folder on this machine, or its hub id; raises ModelError when it or its draft is missing."""
    if model.draft:
        try:
            locate(Model(**model.draft), base)
        except ModelError as e:
            raise ModelError(f"draft: {e}") from e
    if model.hub:
        if not HUB_ID.match(model.hub):
            raise ModelError(f"model.hub '{model.hub}' is not an 'owner/name' hub id")
        return model.hub
    path = _package_file(model.package) if model.package else (base / Path(model.path).expanduser())
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    return path.resolve()


def prepare(model: Model, base: Path, executor: str, models_dir: Path) -> Path:
    """A path the target's stack can load: GGUF files are converted once per backend and cached."""
    where = locate(model, base)
    if isinstance(where, str):
        where = _download(where)
    if (where / RECIPE).is_file():
        where = _generate(where, models_dir)
    kind = executor.partition(":")[0]
    prepare_for = getattr(importlib.import_module(f"backends.{kind}"), "prepare_model", None)
    return prepare_for(where, models_dir) if prepare_for else where


def prepare_draft(model: Model, base: Path, executor: str, models_dir: Path) -> Path | None:
    """The draft model's path, prepared like the target model's; None when the target names no draft."""
    if not model.draft:
        return None
    return prepare(Model(**model.draft), base, executor, models_dir)


def _package_file(spec: str) -> Path:
    package, _, rest = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"model.package: Python package '{package}' is not installed (pip install it)")
    return Path(list(found.submodule_search_locations)[0]) / rest


def _generate(recipe: Path, models_dir: Path) -> Path:
    """A synthetic model: the folder's generate.py run once (python generate.py OUT), cached by the folder's hash."""
    digest = hashlib.sha256()
    for file in sorted(f for f in recipe.rglob("*") if f.is_file() and "__pycache__" not in f.parts):
        digest.update(str(file.relative_to(recipe)).encode() + file.read_bytes())
    out = models_dir / f"synthetic-{recipe.name}-{digest.hexdigest()[:12]}"
    if out.exists():
        return out
    temp = models_dir / f".{out.name}-{os.getpid()}"
    done = subprocess.run([sys.executable, str(recipe / RECIPE), str(temp)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelError(f"{recipe / RECIPE} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    os.replace(temp, out)
    return out


def _download(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, ignore_patterns=LEGACY_CHECKPOINTS))
    except Exception as e:
        raise ModelError(f"cannot fetch '{hub_id}' from the hub: {type(e).__name__}: {e}") from e
