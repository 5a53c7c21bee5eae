"""memory.md: what a run has learned, appended round by round and read by every LLM role."""

from app.run import ActiveRun


def read(run: ActiveRun) -> str:
    return (run.dir / "memory.md").read_text()


def append(run: ActiveRun, n: int, lines: list[str]) -> None:
    if lines:
        with (run.dir / "memory.md").open("a") as f:
            f.write(f"\n## Round {n}\n\n" + "".join(f"- {line}\n" for line in lines))
