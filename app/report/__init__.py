"""`atelier report RUN`: the run's story as one self-contained HTML file (inline SVG chart, data: images)."""

import os
import tempfile
from pathlib import Path

from app.report.page import render
from app.report.story import gather
from app.store import Store

NAME = "report.html"


def write(store: Store, run_id: str, dest: Path | None = None) -> Path:
    """The report of run_id at dest (a file, or a folder to hold <run>.html); default: the run's own folder."""
    story = gather(store, run_id)
    if dest is None:
        dest = story.run.path / NAME
    elif dest.is_dir():
        dest = dest / f"{story.run.id}.html"
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"no folder {dest.parent} to write {dest.name} in")
    page = render(story).encode("utf-8", errors="backslashreplace")
    handle, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(page)
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return dest
