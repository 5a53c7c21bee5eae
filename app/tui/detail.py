"""A round in full: why it was kept or rejected (its whole reason, gain and interval), each verdict with every
input's finding, the metric samples of each side, the profile summary and the files it changed."""

import statistics
from collections import defaultdict

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from app.store import Round, Run, Store, StoreError
from app.tui.literal import lit
from app.tui.screen import AtelierScreen
from app.views import verdicts_text

PROFILE_LINES = 12


def story(store: Store, run: Run, r: Round) -> str:
    """The round's detail as plain text (shown literally)."""
    parts = [
        f"round {r.n} · {r.task} · {r.status} · {(r.commit_sha or '')[:12] or 'no commit'}",
        "── why ──\n" + (r.reason or "(no reason recorded: the round did not end)") + "\n" + interval(r),
        "── verdicts ──\n" + verdicts_text(r, store.verdicts(run.id, r.n)),
        "── metric samples ──\n" + samples(store, run, r.n),
        "── profile ──\n" + profiles(run, r.n),
        "── files changed ──\n" + files_changed(run, r),
    ]
    return "\n\n".join(parts)


def interval(r: Round) -> str:
    if r.gain is None:
        return "not measured against the incumbent"
    said = f"gain over the incumbent {r.gain:.3f}×"
    if r.low is None or r.high is None:
        return said + " (no interval: measured before intervals were kept)"
    return said + f", interval {r.low:.3f}× to {r.high:.3f}× over {r.pairs or 0} interleaved pairs"


def samples(store: Store, run: Run, n: int) -> str:
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in store.metrics(run.id, n):
        found[(m["side"], m["name"])].append(m["value"])
    if not found:
        return "(none recorded)"
    lines = []
    for (side, name), values in sorted(found.items()):
        shown = " ".join(f"{v:.4g}" for v in values)
        lines.append(f"{side:<10} {name}: {shown} (median {statistics.median(values):.4g}, {len(values)} samples)")
    return "\n".join(lines)


def profiles(run: Run, n: int) -> str:
    files = sorted((run.path / "profiles" / f"round-{n}").glob("*.txt"))
    if not files:
        return "(no profile kept for this round)"
    out = []
    for path in files:
        with path.open(newline="", errors="replace") as f:
            lines = f.read().split("\n")
        more = f"\n… {len(lines) - PROFILE_LINES} more lines in {path}" if len(lines) > PROFILE_LINES else ""
        out.append(f"{path.stem}:\n" + "\n".join(lines[:PROFILE_LINES]) + more)
    return "\n\n".join(out)


def files_changed(run: Run, r: Round) -> str:
    import git

    from app.tui.data import change

    try:
        stat = change(run, r, "--stat")
    except (git.GitError, OSError, ValueError) as e:
        return f"(cannot read the change: {e})"
    return "(no change recorded)" if stat is None else stat or "(no change)"


class RoundScreen(AtelierScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, run: Run, r: Round):
        super().__init__()
        self.run, self.round = run, r

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="round-scroll"):
            yield Static(lit(f"round {self.round.n}: loading…"), id="round-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#round-scroll").focus()
        self.load()

    @work(thread=True, exclusive=True, group="round")
    def load(self) -> None:
        try:
            text = self.atelier.reader.call(story, self.run, self.round)
        except StoreError as e:
            text = str(e)
        self.app.call_from_thread(self.put, "#round-detail", text)
