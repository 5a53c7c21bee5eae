"""`atelier bench json`: the JSONSchemaBench loader, the figures, and one real side-by-side run (slow)."""

import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_json_tiny import FAST_KNOBS, require_sandbox, seed_copy

from app.bench import report
from app.bench.jsonbench import Tuned, build_rows, import_workload, llama_cpp_missing
from backends import sandbox
from conftest import TARGET, atelier

OBJECT = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
ENUM = {"type": "object", "properties": {"size": {"enum": ["S", "M"]}}, "required": ["size"]}
UNCOMPILABLE = {"type": "object", "properties": {"id": {"type": "string", "pattern": "(?<=a)b"}}, "required": ["id"]}


@pytest.fixture(scope="module")
def workload():
    return import_workload(TARGET)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def checkout(root: Path) -> Path:
    """A JSONSchemaBench-shaped folder: two splits, a large schema, a file that is not JSON."""
    for split, files in {
        "Alpha": {"a1": OBJECT, "a2": ENUM, "big": {"type": "object", "description": "x" * 500}},
        "Beta": {"b1": ENUM, "bad": "{not json", "c1": UNCOMPILABLE},
    }.items():
        (root / "data" / split).mkdir(parents=True)
        for name, schema in files.items():
            text = schema if isinstance(schema, str) else json.dumps(schema)
            (root / "data" / split / f"{name}.json").write_text(text)
    return root


def test_jsonschemabench_takes_the_smallest_schemas_per_split_and_reports_the_rest(tmp_path, workload, tokenizer):
    cases, skipped = workload.jsonschemabench(checkout(tmp_path), tokenizer, 2, 300, 64)
    assert [c.name for c in cases] == ["Alpha/a1", "Alpha/a2", "Beta/b1", "Beta/c1"]
    reasons = {s.name: s.reason for s in skipped}
    assert sorted(reasons) == ["Alpha/big", "Beta/bad"]
    assert reasons["Alpha/big"] == "schema is 534 chars, over 300" and reasons["Beta/bad"].startswith("not JSON")
    case = cases[0]
    assert case.max_tokens == 64 and case.schema == OBJECT
    assert json.dumps(OBJECT, separators=(",", ":")) in case.messages[0]["content"]
    assert case.prompt == workload.render(tokenizer, case.messages)
    assert case.prompt.endswith("<|im_start|>assistant\n")


def test_jsonschemabench_without_splits_is_a_clear_error(tmp_path, workload, tokenizer):
    with pytest.raises(FileNotFoundError, match="no JSONSchemaBench splits"):
        workload.jsonschemabench(tmp_path, tokenizer, 2, 300, 64)


def answer(tokens: list[int], text: str, seconds: float, finish: str = "stop", **extra) -> dict:
    return {"tokens": tokens, "text": text, "finish_reason": finish, "latency_s": [seconds], "ttft_s": 0.1} | extra


def test_figures_count_validity_identity_and_shares():
    cases = [SimpleNamespace(name=n, schema=ENUM, max_tokens=8) for n in ("x", "y", "z")]
    answers = {
        "b": {"x": answer([1, 2], '{"size":"S"}', 2.0), "y": answer([3], '{"size":"M"}', 4.0),
              "z": answer([5] * 8, '{"size":', 6.0, "length")},
        "e": {"x": answer([1, 2], '{"size":"S"}', 1.0, stats={"jump_forward": 1, "accepted": 2}),
              "y": answer([4], '{"size":"L"}', 1.0, stats={"jump_forward": 0, "accepted": 0}),
              "z": {"error": "stack exited", "latency_s": [0.5]}},
    }  # fmt: skip
    results = report.Results(rows=[("b", "ref"), ("e", "tuned")], cases=cases, answers=answers)
    b, e = (report.figures(results, key, label) for key, label in results.rows)
    assert (b.valid, b.identical, b.p50) == (2, 3, 4.0)
    assert b.failures == ["z: hit max_tokens (8)"]
    assert (e.valid, e.identical, e.answered) == (1, 1, 2)
    assert e.failures[0].startswith("y: schema-invalid") and e.failures[1] == "z: error: stack exited"
    assert e.jump_forward == pytest.approx(1 / 3) and e.drafted == pytest.approx(1 / 3)
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0.9) == pytest.approx(3.7)
    assert "| e | tuned | 1.00 |" in report.table(results, [b, e]) and "4.00×" in report.table(results, [b, e])


@pytest.mark.slow
def test_bench_runs_every_row_side_by_side_and_writes_the_report(tmp_path, models_dir, model_dir):
    stack = seed_copy(tmp_path / "tuned", **FAST_KNOBS, jump_forward="on", draft="prompt")
    out = tmp_path / "out"
    result = atelier(
        "bench", "json", "--data", str(checkout(tmp_path / "bench")), "--per-split", "2", "--max-chars", "300",
        "--max-tokens", "24", "--stack", str(stack), "--out", str(out), home=models_dir.parent, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = {row["key"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    peer = llama_cpp_missing() == ""
    assert list(figures) == ["a", "b", "b=", *(["c"] if peer else []), "d", "e"]
    text = (out / "report.md").read_text()
    assert "Beta/c1:" in text.split("could not compile")[1]
    assert "Alpha/big: schema is 534 chars" in text and "Beta/bad: not JSON" in text
    for key in ("b", "b=", "d", "e"):
        assert figures[key]["valid"] == 3, (key, figures[key]["failures"])
    assert figures["d"]["identical"] == 3
    assert figures["e"]["identical_layout"] == 3
    assert figures["e"]["jump_forward"] > 0
    if peer:
        assert figures["c"]["answered"] == 3
    else:
        assert 'skipped: llama-cpp-python is not installed: pip install -e ".[bench]"' in text.split("Row c (")[1]
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


LOOSE = {
    "type": "object",
    "properties": {
        "note": {"type": "string"},
        "code": {"type": ["string", "null"], "minLength": 40, "maxLength": 500},
        "site": {"type": "string", "format": "uri"},
        "size": {"type": "string", "enum": ["a" * 40]},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 99},
        "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
        "pick": {"anyOf": [{"type": "string"}, {"type": "integer"}], "default": {"type": "string"}},
    },
    "required": ["note", "color"],
    "$defs": {"tag": {"type": "string", "maxLength": 8}},
}


def test_bounded_caps_free_values_only_within_the_schema(workload):
    grammar = workload.bounded(LOOSE)
    properties = grammar["properties"]
    assert properties["note"]["maxLength"] == workload.STRING_CHARS
    assert properties["code"]["maxLength"] == 40
    assert "maxLength" not in properties["site"] and "maxLength" not in properties["size"]
    assert properties["tags"]["maxItems"] == workload.ARRAY_ITEMS
    assert properties["meta"]["maxProperties"] == workload.OBJECT_KEYS
    assert properties["pick"]["anyOf"][0]["maxLength"] == workload.STRING_CHARS
    assert properties["pick"]["default"] == {"type": "string"}
    assert grammar["$defs"]["tag"]["maxLength"] == 8
    assert properties["color"] == {} and "color" not in LOOSE["properties"]


def test_bounded_grammar_decodes_what_xgrammar_dropped_and_stops_loops(workload, tokenizer):
    import jsonschema
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgr.GrammarCompiler(info)

    def accepts(schema: dict, text: str) -> bool:
        matcher = xgr.GrammarMatcher(
            compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        )
        return matcher.accept_string(text) and matcher.accept_token(matcher.stop_token_ids[0])

    short, long = '{"note":"hi","color":[1]}', '{"note":"' + "x" * 33 + '","color":1}'
    assert not accepts(LOOSE, short) and accepts(workload.bounded(LOOSE), short)
    assert accepts(LOOSE, long.replace(',"color":1', "")) and not accepts(workload.bounded(LOOSE), long)
    jsonschema.validate(json.loads(short), LOOSE)


def test_benchmarks_check_at_least_two_answers_or_a_quarter(workload):
    sizes = {n: len(workload.checked_sample(list(range(n)), random.Random(n))) for n in (1, 2, 3, 8, 9, 24)}
    assert sizes == {1: 1, 2: 2, 3: 2, 8: 2, 9: 3, 24: 6}


def test_seed_and_tuned_rows_run_confined_from_fresh_copies(tmp_path, monkeypatch):
    require_sandbox()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-stacks")
    model, scratch = tmp_path / "model", tmp_path / "scratch"
    model.mkdir(), scratch.mkdir()
    tuned = Tuned(seed_copy(tmp_path / "tuned", **FAST_KNOBS), "stack", FAST_KNOBS)
    rows = {r.key: r for r in build_rows(["a", "d", "e"], TARGET / "seed", tuned, model, tmp_path / "m.gguf", scratch)}
    assert rows["a"].env == {}
    for key, source in (("d", TARGET / "seed"), ("e", tuned.folder)):
        row = rows[key]
        assert row.cwd.parent == scratch and (row.cwd / "serve.py").read_text() == (source / "serve.py").read_text()
        assert row.command == [sys.executable, str(row.cwd / "serve.py"), "--model", str(model)]
        prefix = json.loads(row.env["ATELIER_CONFINE"])
        assert prefix[0] == "bwrap" and prefix[-1] == "--" and "--clearenv" in prefix
        assert ["--bind", str(row.cwd), str(row.cwd)] == prefix[prefix.index(str(row.cwd)) - 1 :][:3]
        assert str(model) in prefix and str(source) not in prefix and str(TARGET) not in prefix
        assert "OPENAI_API_KEY" not in row.env and "sk-not-for-stacks" not in json.dumps(prefix)
    monkeypatch.setattr(sandbox, "available", lambda: "bubblewrap is not installed: apt-get install bubblewrap")
    assert [r.key for r in build_rows(["a", "b"], TARGET / "seed", None, model, tmp_path / "m.gguf", scratch)]
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap"):
        build_rows(["a", "d"], TARGET / "seed", None, model, tmp_path / "m.gguf", tmp_path)
