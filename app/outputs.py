"""Files a checker leaves for people to look at, such as images: it writes them into {cache}/outputs, the Judge
moves them to <run>/outputs/<round>/ (round 0: the seed's check at the baseline) before checking the cache is
untouched. NAME.reference.EXT is the reference's counterpart of NAME.EXT."""

import shutil
from dataclasses import dataclass
from pathlib import Path

from app.store import Round, Run

FOLDER = "outputs"
REFERENCE = ".reference"
IMAGES = (".png", ".jpg", ".jpeg")


@dataclass
class Pair:
    name: str
    image: Path | None
    reference: Path | None


def clear(cache: Path) -> None:
    shutil.rmtree(cache / FOLDER, ignore_errors=True)


def keep(run_dir: Path, n: int | None) -> Path | None:
    """Move what the checker wrote to the round's folder (replacing an earlier attempt's); None when it wrote none."""
    written = run_dir / "cache" / FOLDER
    if not written.is_dir():
        return None
    dest = folder(run_dir, n or 0)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(written, dest)
    return dest


def folder(run_dir: Path, n: int) -> Path:
    return Path(run_dir) / FOLDER / str(n)


def images(run_dir: Path, n: int) -> list[Pair]:
    """The round's images, each with its reference's when the checker wrote one."""
    found = sorted(p for p in folder(run_dir, n).glob("*") if p.suffix.lower() in IMAGES)
    own = {p.stem: p for p in found if not p.stem.endswith(REFERENCE)}
    theirs = {p.stem.removesuffix(REFERENCE): p for p in found if p.stem.endswith(REFERENCE)}
    return [Pair(name, own.get(name), theirs.get(name)) for name in sorted(own | theirs)]


def best_round(run: Run, rounds: list[Round]) -> int:
    """The round that produced the run's best stack; 0 while the seed is the best."""
    found = [r.n for r in rounds if r.commit_sha and r.commit_sha == run.best_commit and r.status == "accepted"]
    return found[-1] if found else 0
