"""Plain-text tables for the CLI."""

import json
import sqlite3
import time
from collections.abc import Sequence

from app import outputs
from app.store import Round, Run


def _ratio(value: float | None) -> str:
    return f"{value:.2f}×" if value else "-"


def _num(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "-"


def runs_table(runs: list[Run]) -> str:
    rows = [("run", "target", "policy", "status", "metric", "baseline", "best", "ratio", "confirmed", "started")]
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started))
        rows.append(
            (
                r.id,
                r.target,
                r.policy,
                r.status,
                r.metric,
                _num(r.baseline),
                _num(r.best),
                _ratio(r.best_ratio),
                _ratio(r.headline),
                started,
            )
        )
    return _table(rows)


def _interval(low: float | None, high: float | None) -> str:
    return f"{low:.2f}–{high:.2f}" if low is not None and high is not None else "-"


def rounds_table(run: Run, rounds: list[Round]) -> str:
    rows = [
        ("round", "task", "verdict", "metric", "vs incumbent", "interval", "pairs", "vs baseline", "commit", "reason")
    ]
    for r in rounds:
        commit, reason = (r.commit_sha or "")[:10], (r.reason or "")[:90]
        interval, pairs = _interval(r.low, r.high), str(r.pairs) if r.pairs else "-"
        rows.append(
            (
                str(r.n),
                r.task,
                r.status,
                _num(r.metric),
                _ratio(r.gain),
                interval,
                pairs,
                _ratio(r.ratio),
                commit,
                reason,
            )
        )
    summary = f"baseline {_num(run.baseline)} · best {_num(run.best)} · ratio {_ratio(run.best_ratio)}"
    summary += f" · noise ±{run.noise:.1%} a pair" if run.noise else ""
    return _table(rows) + f"\n\n{run.metric} ({run.direction} is better): {summary}\n{headline(run)}"


def headline(run: Run) -> str:
    """The run's headline: its best stack against the seed, confirmed side by side at the end of the run."""
    if run.headline is None:
        return "headline: not confirmed yet (the best stack is measured against the seed when the run ends)"
    interval = _interval(run.headline_low, run.headline_high)
    return f"headline: best vs seed {_ratio(run.headline)} ({interval}, confirmed side by side)"


def verdicts_text(r: Round, verdicts: Sequence[sqlite3.Row]) -> str:
    """A round's verdicts in full, what the hidden checks found included (agents only ever saw one line of it)."""
    lines = [f"round {r.n}: {r.status}" + (f", snapshot {r.tree}" if r.tree else "")]
    for v in verdicts:
        lines.append(f"  {v['role']}: {'pass' if v['passed'] else 'fail'}")
        lines += [f"    {reason}" for reason in json.loads(v["reasons"] or "[]")]
        lines += [f"    (kept from agents) {line}" for line in json.loads(v["detail"] or "[]")]
    return "\n".join(lines)


def images_text(run: Run, rounds: list[Round], n: int | None = None) -> str:
    """Where a round's images and the reference's are (the best round's unless n is given); empty when a target
    keeps no images and no round was asked for."""
    which = outputs.best_round(run, rounds) if n is None else n
    pairs = outputs.images(run.path, which)
    title = (
        f"images of round {which}" + (" (the best stack)" if n is None else "") + (" (the seed)" if not which else "")
    )
    if not pairs:
        return f"{title}: none (the checker kept no images for it)" if n is not None else ""
    rows = [("case", "image", "reference")]
    rows += [(p.name, str(p.image or "-"), str(p.reference or "-")) for p in pairs]
    return f"{title}:\n" + _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
