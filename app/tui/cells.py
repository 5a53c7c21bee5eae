"""The run screen's words: a round's row, an event's line, the head line; all literal (app/tui/literal.py)."""

from rich.text import Text

from app.store import Round
from app.tui import data
from app.tui.data import RunDetail
from app.tui.literal import clean, join
from app.tui.runs import ratio

VERDICT = {"accepted": "green", "rejected": "red", "failed": "red", "reverted": "yellow"}


def num(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "-"


def round_cells(r: Round, previous: dict[int, float], cut: int = 60) -> tuple:
    """A round's row: the reason's first line cut to fit (enter shows it whole)."""
    verdict = Text(clean(r.status), style=VERDICT.get(r.status, ""))
    first = (r.reason or "").strip().splitlines()[0] if (r.reason or "").strip() else ""
    reason = first if len(first) <= cut and first == (r.reason or "").strip() else first[: cut - 1] + "…"
    commit = (r.commit_sha or "")[:10]
    return (str(r.n), r.task, verdict, reason, num(r.metric), ratio(r.ratio), ratio(previous.get(r.n)), commit)


def event_line(e) -> str:
    where = f"round {e['round']:>3}" if e["round"] is not None else "run      "
    return clean(f"{where}  {e['kind']:<9} {e['message']}").replace("\n", " ⏎ ")


def headline(d: RunDetail) -> Text:
    r = d.row.run
    parts: list = [(r.id, "bold"), "  ·  ", f"{r.target} on {r.executor}", "  ·  ", f"policy {r.policy}", "  ·  ",
                   (d.row.status, "bold")]  # fmt: skip
    if d.wanted and d.row.status in data.LIVE:
        parts += ["  ·  ", (f"{d.wanted} requested", "yellow")]
    figures = f"\n{r.metric} ({r.direction} is better): baseline {num(r.baseline)} · best {num(r.best)} · "
    parts += [figures, (ratio(r.best_ratio), "bold"), f" · noise ±{r.noise:.1%}" if r.noise else ""]
    return join(*parts)
