import hashlib
import os
import shutil
import stat
from pathlib import Path

from app.target import Target


class TamperError(Exception):
    pass


def install(target: Target, run_dir: Path) -> dict[str, str]:
    """Copy the bundle's read-only and hidden paths beside the workspace, read-only; return their SHA-256s."""
    for folder, names in (("readonly", target.readonly), ("hidden", target.hidden)):
        for name in names:
            _copy(target.dir / name, run_dir / folder / name)
        (run_dir / folder).mkdir(exist_ok=True)
        _freeze(run_dir / folder)
    return manifest(run_dir, ("readonly", "hidden"))


def manifest(run_dir: Path, folders=("readonly", "hidden", "cache")) -> dict[str, str]:
    files = {}
    for folder in folders:
        root = run_dir / folder
        for path in sorted(root.rglob("*")):
            if path.is_file() or path.is_symlink():
                files[str(path.relative_to(run_dir))] = _sha256(path)
    return files


def verify(run_dir: Path, expected: dict[str, str]) -> list[str]:
    """Each difference from the recorded hashes, as one line. The cache counts once it is in the record;
    a cache file gone is no harm (the checker writes it again), a changed one is."""
    frozen = any(p.startswith("cache/") for p in expected)
    found = manifest(run_dir, ("readonly", "hidden", "cache") if frozen else ("readonly", "hidden"))
    problems = [f"{p}: modified" for p in expected if p in found and found[p] != expected[p]]
    problems += [f"{p}: deleted" for p in expected if p not in found and not p.startswith("cache/")]
    problems += [f"{p}: added" for p in found if p not in expected]
    return problems


def restore(target: Target, run_dir: Path, expected: dict[str, str]) -> None:
    """Put the pristine copies back after a candidate touched them, if the bundle still holds the same bytes.
    The cache (reference outputs the checker wrote on the seed) is emptied, for the checker to write again."""
    for folder in ("readonly", "hidden", "cache"):
        _thaw(run_dir / folder)
        shutil.rmtree(run_dir / folder, ignore_errors=True)
    found = install(target, run_dir)
    (run_dir / "cache").mkdir()
    if any(found.get(p) != h for p, h in expected.items() if not p.startswith("cache/")):
        raise TamperError(f"{target.dir}: the bundle changed since the run started; its read-only inputs differ")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(src, dest)


def _freeze(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _thaw(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        Path(dirpath).chmod(0o755)


def _sha256(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
