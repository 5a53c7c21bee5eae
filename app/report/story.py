"""What a report tells, read from the store, the run's git workspace and its outputs folder."""

import base64
import hashlib
import io
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from app import outputs
from app.run import alive, hardware_facts
from app.store import Round, Run, Store, gain

MAX_DIFF_LINES = 800
MAX_IMAGE_BYTES = 300_000
MAX_IMAGE_SIDE = 512
LIVE = ("starting", "running", "paused")
MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass
class Picture:
    """One image as a data: URI, or which image of which round showed the same picture first."""

    label: str
    path: Path
    uri: str = ""
    same_as: str = ""
    note: str = ""


@dataclass
class Chapter:
    """One round: the row, its verdicts, samples, change and images."""

    round: Round
    verdicts: list[dict]
    samples: dict[str, list[float]]
    diff: str
    diff_cut: int
    pictures: list[Picture]


@dataclass
class Story:
    run: Run
    status: str
    description: str
    hardware: dict
    chapters: list[Chapter]
    seed_pictures: list[Picture]
    baseline_samples: list[float]
    events: dict[str, str]
    usage: list[dict]
    settings: dict
    stack_diff: str = ""
    stack_cut: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> list[Round]:
        return [c.round for c in self.chapters]


def gather(store: Store, run_id: str) -> Story:
    run = store.run(run_id)
    repo = _repo(run)
    seen: dict[str, str] = {}
    seed_pictures = _pictures(run, 0, seen)
    chapters = [_chapter(store, run, r, repo, seen) for r in store.rounds(run.id)]
    stack_diff, stack_cut = _cut(_diff(repo, _root(repo, run), run.best_commit)) if repo else ("", 0)
    events = {e["kind"]: e["message"] for e in store.events(run.id) if e["kind"] in ("baseline", "stop", "error")}
    return Story(
        run=run,
        status="interrupted" if run.status in LIVE and not alive(run.pid) else run.status,
        description=_description(run),
        hardware=_hardware(run),
        chapters=chapters,
        seed_pictures=seed_pictures,
        baseline_samples=_samples(store, run, 0).get("baseline", []),
        events=events,
        usage=[dict(u) for u in store.usage(run.id)],
        settings=_settings(repo, run.best_commit),
        stack_diff=stack_diff,
        stack_cut=stack_cut,
        notes=[] if repo else [f"no git workspace at {run.path / 'workspace'}: diffs are missing"],
    )


def _hardware(run: Run) -> dict:
    try:
        facts = hardware_facts(run.path)
    except (OSError, ValueError) as e:
        return {"unreadable": str(e)}
    return facts if isinstance(facts, dict) else {}


def _chapter(store: Store, run: Run, r: Round, repo, seen: dict[str, str]) -> Chapter:
    verdicts = [
        {
            "role": v["role"],
            "passed": bool(v["passed"]),
            "reasons": _list(v["reasons"]),
            "detail": _list(v["detail"]),
        }
        for v in store.verdicts(run.id, r.n)
    ]
    commit = r.commit_sha or _ref(repo, f"refs/atelier/rejected/{r.n}")
    diff, cut = _cut(_diff(repo, r.start_commit, commit)) if repo else ("", 0)
    return Chapter(r, verdicts, _samples(store, run, r.n), diff, cut, _pictures(run, r.n, seen))


def _samples(store: Store, run: Run, n: int) -> dict[str, list[float]]:
    """The run's metric per side (incumbent, candidate, or baseline for round 0), in the order measured."""
    rows = sorted((m for m in store.metrics(run.id, n) if m["name"] == run.metric), key=lambda m: m["repeat"])
    out: dict[str, list[float]] = {}
    for m in rows:
        out.setdefault(m["side"], []).append(m["value"])
    return out


def _list(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return [str(raw)]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _description(run: Run) -> str:
    try:
        from app.target import load

        return load(run.target_dir).description
    except Exception as e:  # a moved or edited bundle must not stop the report
        return f"(the target bundle cannot be read at {run.target_dir}: {e})"


def _repo(run: Run):
    import git

    from app.workspace import Workspace

    try:
        return Workspace(run.path / "workspace", run.branch).repo
    except (git.GitError, OSError, ValueError):
        return None


def _root(repo, run: Run) -> str | None:
    import git

    try:
        return repo.git.rev_list("--max-parents=0", run.best_commit or "HEAD").split()[0]
    except (git.GitError, IndexError, ValueError):
        return None


def _ref(repo, name: str) -> str | None:
    import git

    if repo is None:
        return None
    try:
        return repo.commit(name).hexsha
    except (git.BadName, git.GitError, ValueError):
        return None


def _diff(repo, start: str | None, end: str | None) -> str:
    import git

    if not start or not end or start == end:
        return ""
    try:
        return repo.git.diff("--no-ext-diff", "--no-textconv", "--no-color", start, end)
    except (git.GitError, OSError, ValueError) as e:
        return f"(cannot read the diff {start[:10]}..{end[:10]}: {e})"


def _cut(diff: str) -> tuple[str, int]:
    lines = diff.splitlines()
    return "\n".join(lines[:MAX_DIFF_LINES]), max(0, len(lines) - MAX_DIFF_LINES)


def _settings(repo, commit: str | None) -> dict:
    """Knob defaults of the best stack (empty without a knob file)."""
    import git

    if repo is None or not commit:
        return {}
    try:
        doc = tomllib.loads(repo.git.show(f"{commit}:atelier.knobs.toml"))
    except (git.GitError, ValueError):
        return {}
    return {k: v.get("default") for k, v in doc.items() if isinstance(v, dict)}


def _pictures(run: Run, n: int, seen: dict[str, str]) -> list[Picture]:
    out = []
    where = f"round {n}" if n else "the baseline"
    for pair in outputs.images(run.path, n):
        for path, side in ((pair.image, f"round {n}" if n else "seed"), (pair.reference, "reference")):
            if path is not None:
                out.append(_picture(f"{pair.name} · {side}", path, seen, where))
    return out


def _picture(label: str, path: Path, seen: dict[str, str], where: str) -> Picture:
    try:
        data = path.read_bytes()
    except OSError as e:
        return Picture(label, path, note=f"cannot read {path}: {e}")
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen:
        return Picture(label, path, same_as=seen[digest])
    try:
        uri, note = _data_uri(data)
    except Exception as e:  # whatever the imaging library makes of a damaged or hostile file
        return Picture(label, path, note=f"not an image the report can show ({e})")
    seen[digest] = f"{label} in {where}"
    return Picture(label, path, uri=uri, note=note)


def _data_uri(data: bytes) -> tuple[str, str]:
    """The image as it is when small, else scaled down to a PNG; what was done, in words."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        opened.verify()
    with Image.open(io.BytesIO(data)) as opened:
        size, mime = opened.size, Image.MIME.get(opened.format or "")
        if mime in MIMES and len(data) <= MAX_IMAGE_BYTES and max(size) <= MAX_IMAGE_SIDE * 2:
            return f"data:{mime};base64,{base64.b64encode(data).decode()}", ""
        small = opened.convert("RGB")
        small.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    note = f"shown at {small.width}×{small.height}, from {size[0]}×{size[1]}"
    return f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}", note


def ratio(run: Run, r: Round) -> float | None:
    """The round's metric as a gain over the baseline."""
    if r.ratio is not None:
        return r.ratio
    if r.metric is None or not run.baseline:
        return None
    return gain(r.metric, run.baseline, run.direction)
