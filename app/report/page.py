"""The report as one HTML page: no script, no request (its policy allows only inline styles and data: images)."""

import json
import time

from app.report.chart import trend
from app.report.escape import text as t
from app.report.story import Chapter, Picture, Story, ratio

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
OPEN_DIFF_LINES = 60
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#1d1d1f}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{margin:1.6em 0 .4em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em}dt{color:#666}dd{margin:0}
table{border-collapse:collapse;font-size:.92em}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left;
vertical-align:top}th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.reason,pre{white-space:pre-wrap;overflow-wrap:anywhere}pre{background:#f7f7f9;padding:.6em;font-size:.85em;
border-radius:4px}.add{color:#116329;background:#e6ffec}.del{color:#82071e;background:#ffebe9}.hunk{color:#6e40c9}
.file{font-weight:bold}.accepted{color:#116329}.rejected{color:#a40e26}.failed,.interrupted{color:#9a6700}
.badge{font-size:.8em;border:1px solid;border-radius:3px;padding:0 .4em}.muted{color:#666}
figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}figure img{width:192px;
image-rendering:pixelated;border:1px solid #ccc}figcaption{font-size:.8em;color:#555;max-width:192px}
svg.trend{max-width:100%;height:auto;font:12px system-ui,sans-serif}
svg .grid{stroke:#eee}svg .one{stroke:#999;stroke-dasharray:4 3}svg .frame{stroke:#888}
svg .ylabel{text-anchor:end;fill:#555}svg .xlabel,svg .axis,svg .clabel,svg .empty{text-anchor:middle;fill:#555}
svg .best{fill:none;stroke:#2da44e;stroke-width:2;opacity:.6}svg circle.accepted{fill:#1a7f37}
svg path.rejected{stroke:#cf222e;stroke-width:2.2;fill:none}svg circle.other{fill:#fff;stroke:#9a6700;stroke-width:2}
svg .seed{fill:#555}svg .whisker{stroke:#777;stroke-width:1.5}svg .unmeasured{fill:#d4a72c}
svg path.confirmed{fill:#0969da}svg .whisker.confirmed{stroke:#0969da}
"""


def render(story: Story) -> str:
    run = story.run
    body = [
        f"<h1>Atelier run {t(run.id)}</h1>",
        f'<p class="muted">{t(story.description)}</p>',
        _facts(story),
        "<h2>Trend</h2>",
        trend(story),
        '<p class="muted">Each measured round\'s metric as a gain over the baseline (above 1 is better): '
        '<span class="accepted">● accepted</span>, <span class="rejected">× rejected</span>, ○ other; the line is the '
        "best stack so far; ▼ on the axis marks a round never measured; whiskers are the interval of a round's gain "
        "over its incumbent, drawn at the incumbent's level; ◆ is the end-of-run confirmation.</p>",
        _baseline(story),
        "<h2>Rounds</h2>",
        _rounds_table(story),
        *(_chapter(story, c) for c in story.chapters),
        "<h2>Confirmation</h2>",
        _confirmation(story),
        "<h2>The exported stack</h2>",
        _stack(story),
    ]
    if story.usage:
        body.append(_usage(story))
    body += [f'<p class="muted">{t(note)}</p>' for note in story.notes]
    body.append(f'<p class="muted">Written by atelier report at {t(_when(time.time()))}.</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Atelier report: {t(run.id)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _num(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "-"


def _x(value: float | None) -> str:
    return f"{value:.3f}×" if value is not None else "-"


def _facts(story: Story) -> str:
    run = story.run
    noise = f" (noise band ±{run.noise:.1%})" if run.noise else ""
    rows = [
        ("target", f"{run.target} ({run.target_dir})"),
        ("executor · policy", f"{run.executor} · {run.policy}"),
        ("status", story.status + (f": {story.events['stop']}" if "stop" in story.events else "")),
        ("started · last update", f"{_when(run.started)} · {_when(run.updated)}"),
        ("metric", f"{run.metric} ({run.direction} is better)"),
        ("baseline", _num(run.baseline) + noise),
        ("best", f"{_num(run.best)} ({_x(run.best_ratio)} the baseline)"),
        ("confirmed", _headline(story)),
        ("rounds", _tally(story)),
    ]
    if story.hardware:
        rows.append(("hardware", ", ".join(f"{k} {v}" for k, v in story.hardware.items())))
    if "error" in story.events:
        rows.append(("last error", story.events["error"]))
    cells = "".join(f"<dt>{t(k)}</dt><dd>{t(v)}</dd>" for k, v in rows)
    return f'<dl class="facts">{cells}</dl>'


def _tally(story: Story) -> str:
    counts: dict[str, int] = {}
    for r in story.rounds:
        counts[r.status] = counts.get(r.status, 0) + 1
    return f"{len(story.rounds)}" + (": " + ", ".join(f"{v} {k}" for k, v in counts.items()) if counts else "")


def _headline(story: Story) -> str:
    run = story.run
    if run.headline is None:
        return "not confirmed"
    interval = ""
    if run.headline_low is not None and run.headline_high is not None:
        interval = f", interval {run.headline_low:.3f}–{run.headline_high:.3f}×"
    return f"{run.headline:.3f}× the seed{interval} (best stack against the seed, measured fresh and interleaved)"


def _baseline(story: Story) -> str:
    out = ["<h2>Baseline</h2>"]
    line = story.events.get("baseline", f"{story.run.metric} {_num(story.run.baseline)}")
    out.append(f"<p>The seed stack, checked and measured: {t(line)}.</p>")
    if story.baseline_samples:
        out.append(f'<p class="muted">samples: {t(" ".join(_num(v) for v in story.baseline_samples))}</p>')
    out.append(_pictures(story.seed_pictures))
    return "\n".join(out)


def _rounds_table(story: Story) -> str:
    head = "<tr><th>round</th><th>task</th><th>verdict</th><th>metric</th><th>vs incumbent</th>"
    head += "<th>vs baseline</th><th>commit</th><th>time</th></tr>"
    rows = []
    for r in story.rounds:
        took = f"{r.ended - r.started:.0f} s" if r.ended else "-"
        rows.append(
            f'<tr><td class="num"><a href="#round-{r.n}">{r.n}</a></td><td>{t(r.task)}</td>'
            f'<td class="{t(r.status)}">{t(r.status)}</td><td class="num">{_num(r.metric)}</td>'
            f'<td class="num">{t(_gain(r))}</td><td class="num">{_x(ratio(story.run, r))}</td>'
            f'<td><code>{t((r.commit_sha or "")[:10])}</code></td><td class="num">{took}</td></tr>'
        )
    if not rows:
        return "<p>No rounds played.</p>"
    return f"<table>{head}{''.join(rows)}</table>"


def _gain(r) -> str:
    if r.gain is None:
        return "-"
    out = f"{r.gain:.3f}×"
    if r.low is not None and r.high is not None:
        out += f" [{r.low:.3f}–{r.high:.3f}]"
    return out + (f", {r.pairs} pairs" if r.pairs else "")


def _chapter(story: Story, c: Chapter) -> str:
    r = c.round
    out = [
        f'<section id="round-{r.n}"><h3>Round {r.n}: {t(r.task)} '
        f'<span class="badge {t(r.status)}">{t(r.status)}</span></h3>',
        f'<p class="reason">{t(r.reason or "(no reason recorded)")}</p>',
    ]
    proposal = _proposal(r.proposal)
    if proposal:
        out.append(f'<p class="muted">proposal: <code>{t(proposal)}</code></p>')
    for v in c.verdicts:
        lines = "".join(f"<li>{t(x)}</li>" for x in v["reasons"])
        lines += "".join(f'<li class="muted">(kept from agents) {t(x)}</li>' for x in v["detail"])
        verdict = "pass" if v["passed"] else "fail"
        out.append(f'<p>{t(v["role"])}: <span class="{"accepted" if v["passed"] else "rejected"}">{verdict}</span></p>')
        out.append(f"<ul>{lines}</ul>" if lines else "")
    for side, values in c.samples.items():
        out.append(f'<p class="muted">{t(side)} samples: {t(" ".join(_num(v) for v in values))}</p>')
    out.append(_diff(c.diff, c.diff_cut, f"the change (from {(r.start_commit or '?')[:10]})"))
    out.append(_pictures(c.pictures))
    return "\n".join(out) + "</section>"


def _proposal(raw: str) -> str:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return raw
    return json.dumps(value, ensure_ascii=False) if value else ""


def _diff(diff: str, cut: int, title: str) -> str:
    if not diff:
        return f'<p class="muted">{t(title)}: none recorded</p>'
    lines = diff.splitlines()
    body = "\n".join(_diff_line(line) for line in lines)
    more = f"\n… {cut} more lines (see the run's git workspace)" if cut else ""
    opened = " open" if len(lines) <= OPEN_DIFF_LINES else ""
    summary = f"{title}: {len(lines) + cut} lines"
    return f"<details{opened}><summary>{t(summary)}</summary><pre>{body}{t(more)}</pre></details>"


def _diff_line(line: str) -> str:
    for prefix, cls in (("diff --git", "file"), ("+++", "file"), ("---", "file"), ("@@", "hunk"), ("+", "add")):
        if line.startswith(prefix):
            return f'<span class="{cls}">{t(line)}</span>'
    return f'<span class="del">{t(line)}</span>' if line.startswith("-") else t(line)


def _pictures(pictures: list[Picture]) -> str:
    out = []
    for p in pictures:
        if p.uri:
            caption = p.label + (f" ({p.note})" if p.note else "")
            out.append(f'<figure><img src="{p.uri}" alt="{t(p.label)}"><figcaption>{t(caption)}</figcaption></figure>')
        elif p.same_as:
            out.append(f'<p class="muted">{t(p.label)}: the same picture as {t(p.same_as)}</p>')
        else:
            out.append(f'<p class="muted">{t(p.label)}: {t(p.note)}</p>')
    return f'<div class="images">{"".join(out)}</div>' if out else ""


def _confirmation(story: Story) -> str:
    run = story.run
    if run.headline is None:
        return "<p>Not confirmed: the best stack has not been measured fresh against the seed.</p>"
    return f"<p>{t(_headline(story))}.</p>"


def _stack(story: Story) -> str:
    run = story.run
    if not run.best_commit:
        return "<p>No stack to export: no round was accepted.</p>"
    out = [
        f"<p>The best stack is commit <code>{t(run.best_commit)}</code> on branch <code>{t(run.branch)}</code>. "
        "Export it as a standalone folder (its code, its model, <code>run.sh</code>) or serve it here:</p>",
        f"<pre>atelier export {t(run.id)} --to {t(run.id)}-stack\natelier serve {t(run.id)}</pre>",
    ]
    if story.settings:
        cells = "".join(
            f"<tr><td>{t(k)}</td><td><code>{t(repr(v))}</code></td></tr>" for k, v in story.settings.items()
        )
        out.append(f"<table><tr><th>knob</th><th>setting</th></tr>{cells}</table>")
    out.append(_diff(story.stack_diff, story.stack_cut, "everything it changes from the seed"))
    return "\n".join(out)


def _usage(story: Story) -> str:
    head = "<tr><th>role</th><th>calls</th><th>tokens in</th><th>tokens out</th><th>active</th><th>cost</th></tr>"
    rows = []
    for u in story.usage:
        counts = [f"{int(u[k] or 0)}" for k in ("calls", "tokens_in", "tokens_out")]
        cells = [u["role"], *counts, f"{float(u['active_s'] or 0):.0f} s", f"${float(u['cost'] or 0):.2f}"]
        rows.append("<tr>" + "".join(f"<td>{t(c)}</td>" for c in cells) + "</tr>")
    return f"<h2>Agents</h2><table>{head}{''.join(rows)}</table>"
