"""The json bench's figures: per-row latency percentiles, validity, identity to the reference, table and chart."""

import json
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

REFERENCE = "b"


@dataclass
class Results:
    rows: list[tuple[str, str]]
    cases: list
    answers: dict
    skipped: list = field(default_factory=list)
    uncompiled: list = field(default_factory=list)
    tuned: str = ""
    command: str = ""


@dataclass
class Figures:
    key: str
    label: str
    p50: float
    p90: float
    ttft: float
    tokens_per_s: float
    valid: int
    identical: int
    identical_layout: int
    answered: int
    jump_forward: float | None
    drafted: float | None
    failures: list[str]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def problem(case, answer: dict) -> str:
    """Why an answer is not a finished, schema-valid JSON value; empty when it is."""
    if "error" in answer:
        return f"error: {answer['error']}"
    tokens, text = answer.get("tokens", []), answer.get("text", "")
    if answer.get("finish_reason") != "stop" or len(tokens) >= case.max_tokens:
        return f"hit max_tokens ({case.max_tokens})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg}): {text[:60]!r}"
    try:
        jsonschema.validate(value, case.schema)
    except jsonschema.ValidationError as error:
        return f"schema-invalid: {error.message[:120]}"
    except Exception as error:  # noqa: BLE001 - unresolvable $ref and the like: say so, count it invalid
        return f"could not be validated: {type(error).__name__}: {str(error)[:120]}"
    return ""


def figures(results: Results, key: str, label: str) -> Figures:
    answers = results.answers[key]
    reference = results.answers.get(REFERENCE, {})
    layout = results.answers.get("b=", {})
    latencies, ttfts, tokens, forced, accepted, failures = [], [], 0, 0, 0, []
    valid = identical = identical_layout = answered = 0
    has_stats = False
    for case in results.cases:
        answer = answers[case.name]
        latencies.append(statistics.median(answer["latency_s"]))
        reason = problem(case, answer)
        valid += not reason
        failures += [f"{case.name}: {reason}"] if reason else []
        if "error" in answer:
            continue
        answered += 1
        ttfts.append(answer.get("ttft_s", float("nan")))
        tokens += len(answer["tokens"])
        identical += same(answer, reference.get(case.name))
        identical_layout += same(answer, layout.get(case.name))
        stats = answer.get("stats")
        if isinstance(stats, dict):
            has_stats = True
            forced += stats.get("jump_forward", 0)
            accepted += stats.get("accepted", 0)
    total = sum(latencies)
    return Figures(
        key, label, percentile(latencies, 0.5), percentile(latencies, 0.9), percentile(ttfts, 0.5),
        tokens / total if total else 0.0, valid, identical, identical_layout, answered,
        forced / tokens if has_stats and tokens else None,
        (accepted - forced) / tokens if has_stats and tokens else None, failures,
    )  # fmt: skip


def same(answer: dict, other: dict | None) -> bool:
    return other is not None and "error" not in other and answer.get("tokens") == other.get("tokens")


def table(results: Results, rows: list[Figures]) -> str:
    base = {f.key: f.p50 for f in rows}
    n = len(results.cases)
    head = ["row", "stack", "p50 s", "p90 s", "TTFT p50 s", "tok/s", "valid", "= b", "= b=",
            "jump-fwd share", "draft share", "b p50 ÷ row", "b= p50 ÷ row"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in rows:
        cells = [f.key, f.label, f"{f.p50:.2f}", f"{f.p90:.2f}", f"{f.ttft:.2f}", f"{f.tokens_per_s:.1f}",
                 f"{f.valid}/{n}", count(f.identical, n, REFERENCE in base), count(f.identical_layout, n, "b=" in base),
                 share(f.jump_forward), share(f.drafted), ratio(base.get(REFERENCE), f.p50),
                 ratio(base.get("b="), f.p50)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def count(value: int, total: int, present: bool) -> str:
    return f"{value}/{total}" if present else "–"


def share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def ratio(base: float | None, value: float) -> str:
    return f"{base / value:.2f}×" if base and value else "–"


def write(results: Results, out: Path) -> str:
    rows = [figures(results, key, label) for key, label in results.rows]
    lines = [f"# atelier bench json\n\n`{results.command}`\n", f"{len(results.cases)} schemas, one request at a time; "
             "latency is the round trip per request (median over repeats), p50/p90 over schemas. "
             f"`= b` counts outputs token-identical to row b (the constrained greedy reference).\n",
             table(results, rows), ""]  # fmt: skip
    if results.tuned:
        lines.append(f"Tuned stack: {results.tuned}.\n")
    for f in rows:
        if f.failures:
            lines.append(f"## Row {f.key}: {len(f.failures)} not finished and schema-valid\n")
            lines += [f"- {failure}" for failure in f.failures] + [""]
    if results.uncompiled:
        lines.append(f"## {len(results.uncompiled)} schemas xgrammar could not compile (not run)\n")
        lines += [f"- {name}: {reason}" for name, reason in results.uncompiled] + [""]
    if results.skipped:
        lines.append(f"## {len(results.skipped)} schemas skipped\n")
        lines += [f"- {s.name}: {s.reason}" for s in results.skipped] + [""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps(dump(results, rows), indent=1))
    chart(rows, out / "chart.png", len(results.cases))
    return text


def dump(results: Results, rows: list[Figures]) -> dict:
    return {
        "command": results.command,
        "rows": [vars(f) for f in rows],
        "cases": {c.name: {"schema": c.schema, "max_tokens": c.max_tokens} for c in results.cases},
        "answers": results.answers,
        "uncompiled": results.uncompiled,
        "skipped": [vars(s) for s in results.skipped],
    }


def chart(rows: list[Figures], path: Path, cases: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 0.8 * len(rows) + 1.6))
    names = [f"{f.key}: " + textwrap.fill(f.label, 40) for f in rows][::-1]
    p50 = [f.p50 for f in rows][::-1]
    p90 = [f.p90 for f in rows][::-1]
    axis.barh(names, p90, color="#c8d6e5", label="p90")
    axis.barh(names, p50, color="#2e86de", label="p50")
    reference = next((f.p50 for f in rows if f.key == REFERENCE), None)
    for y, (low, high) in enumerate(zip(p50, p90, strict=True)):
        note = f"  {low:.2f} s" + (f" ({reference / low:.2f}× b)" if reference and low else "")
        axis.text(high, y, note, va="center", fontsize=8)
    axis.set_xlabel(f"seconds per request ({cases} schemas, one at a time)")
    axis.set_title("Constrained JSON decoding: latency per request")
    axis.legend(loc="lower right")
    axis.set_xlim(0, max(p90) * 1.45 if p90 else 1)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
