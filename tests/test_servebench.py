"""`atelier bench serve`: the request sequence and the counts, a stack whose server misbehaves in every way a
server can (counted, never a crash), and one real run's best stack, seed and mlx_lm.server under load (slow)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_json_tiny import FAST_KNOBS, seed_copy

from app import knobs
from app.bench import servebench
from app.run import Options, create
from app.store import Store
from app.target import load
from conftest import TARGET, atelier

OBJECT = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
WAYS = ["ok", "length", "refuse", "fail", "drop", "hang", "invalid", "garbage"]

# A stack under test (not a stand-in for a model): a real HTTP server that answers its requests in turn in each
# of WAYS, started by the target's serve template (`{python} server.py --model {model}`, then --port 0).
MISBEHAVING_SERVER = '''
import argparse, json, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WAYS = ["ok", "length", "refuse", "fail", "drop", "hang", "invalid", "garbage"]
count = {"n": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        warmup = "Is water wet?" in json.dumps(body["messages"])
        with lock:
            way = "ok" if warmup else WAYS[count["n"] % len(WAYS)]
            count["n"] += 0 if warmup else 1
        if way == "drop":
            return self.connection.close()
        if way == "hang":
            time.sleep(60)
        if way == "garbage":
            return self.send(200, "not json")
        if way == "refuse":
            return self.send(400, {"error": {"message": "n > 1 is not supported (got 3)", "param": "n"}})
        if way == "fail":
            return self.send(500, {"error": {"message": "engine crashed"}})
        finish, content = {"ok": ("stop", '{"ok": true}'), "length": ("length", '{"ok": tr'),
                           "invalid": ("stop", '{"ok": 1}')}[way]
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        self.send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}})

    def send(self, status, message):
        data = (message if isinstance(message, str) else json.dumps(message)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


parser = argparse.ArgumentParser()
parser.add_argument("--model")
parser.add_argument("--port", type=int, default=8000)
server = ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler)
print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
server.serve_forever()
'''  # fmt: skip


def checkout(root: Path) -> Path:
    (root / "data" / "Alpha").mkdir(parents=True)
    (root / "data" / "Alpha" / "a1.json").write_text(json.dumps(OBJECT))
    return root


def counted(row: dict) -> int:
    return sum(row[k] for k in ("ok", "invalid", "cut", "refused", "errors"))


def test_every_row_gets_the_same_seeded_sequence_and_open_loop_arrivals():
    cases = [SimpleNamespace(name=f"c{i}", schema=OBJECT, grammar=OBJECT, messages=[{}]) for i in range(3)]
    args = SimpleNamespace(seed=7, requests=7, max_tokens=16, raw_schemas=False, rate=2.0)
    first, again = servebench.sequence(cases, args), servebench.sequence(cases, args)
    assert first == again and len(first) == 7
    assert sorted(r["case"] for r in first[:3]) == ["c0", "c1", "c2"] and first[3]["case"] == first[0]["case"]
    arrivals = [r["at"] for r in first]
    assert arrivals == sorted(arrivals) and 0 < arrivals[0]
    assert "at" not in servebench.sequence(cases, SimpleNamespace(**{**vars(args), "rate": None}))[0]


def test_refusals_are_grouped_by_message_class():
    one = servebench.message_class(400, "prompt of 9000 tokens is longer than the context ('x', 2048)")
    assert one == servebench.message_class(400, "prompt of 12 tokens is longer than the context ('y', 2048)")
    assert one.startswith("400: prompt of N tokens")


def test_a_server_that_misbehaves_is_counted_never_a_crash(tmp_path, bwrap, model_dir):
    """Every way a server can fail a request lands in its own column; the bench itself finishes and reports.
    Open loop: every request is sent at its arrival time, whatever the others are doing."""
    stack = tmp_path / "stack"
    stack.mkdir()
    assert f"WAYS = {json.dumps(WAYS)}" in MISBEHAVING_SERVER
    (stack / "server.py").write_text(MISBEHAVING_SERVER)
    out = tmp_path / "out"
    result = atelier(
        "bench", "serve", "--stack", str(stack), "--rows", "e", "--requests", str(len(WAYS)), "--rate", "20",
        "--timeout", "3", "--data", str(checkout(tmp_path / "bench")), "--out", str(out),
        home=model_dir.parent.parent, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert (row["requests"], row["ok"], row["invalid"], row["cut"], row["refused"]) == (8, 1, 1, 1, 1)
    assert (row["server_error"], row["dropped"], row["timeout"], row["bad_response"]) == (1, 1, 1, 1)
    assert row["errors"] == 4 and counted(row) == 8
    assert row["refusals"] == {"400: n > N is not supported (got N)": 1}
    text = (out / "report.md").read_text()
    assert "| e | " in text and "| 8 | 1 | 1 | 1 | 1 | 4 (1/1/1/1) |" in text and "open loop, Poisson" in text
    assert "dropped: APIConnectionError" in text and "timeout: APITimeoutError" in text
    assert "schema-invalid" in text and "not a server" in text


@pytest.mark.slow
def test_bench_serves_a_runs_best_its_seed_and_mlx_lm_server(tmp_path, bwrap, models_dir, model_dir, monkeypatch):
    """A run whose seed is the json-tiny seed in its fast layout and whose best turns jump-forward on, made through
    the store and workspace without playing rounds; then the bench through the CLI, streamed, on one small schema
    (mlx_lm.server runs the 4-bit model with MLX's bundled BLAS: its prefill is the slow part here)."""
    monkeypatch.setenv("ATELIER_HOME", str(models_dir.parent))
    bundle = tmp_path / "json-tiny"
    shutil.copytree(TARGET, bundle, ignore=shutil.ignore_patterns("__pycache__", "seed"))
    seed_copy(bundle / "seed", **FAST_KNOBS)
    store = Store()
    run = create(load(str(bundle)), Options(), store)
    knobs.set_default(run.workspace.path, "jump_forward", "on")
    best = run.workspace.commit("jump_forward = on")
    store.update_run(run.id, best_commit=best, baseline=2.0, best=1.0, status="finished")
    out = tmp_path / "out"
    result = atelier(
        "bench", "serve", run.id, "--clients", "2", "--requests", "4", "--max-tokens", "16", "--stream",
        "--data", str(checkout(tmp_path / "bench")), "--out", str(out), home=models_dir.parent, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == ["e", "s", "m"]
    for key, row in rows.items():
        assert row["requests"] == 4 and counted(row) == 4, (key, row)
        assert row["errors"] == 0 and row["refused"] == 0, (key, row["problems"], row["log_tail"])
        assert row["p50_s"] > 0 and row["ttft_p50_s"] > 0 and row["wall_s"] > 0
    for key in ("e", "s"):
        assert rows[key]["invalid"] == 0 and rows[key]["ok"] == 4, rows[key]["problems"]
    for row in rows.values():  # tokens come from usage only: a stream without it is reported, never guessed
        assert (row["completion_tokens"] or 0) > 0 or "carried no usage" in row["problems"][0]
    assert rows["m"]["completion_tokens"] > 0 and rows["m"]["tokens_per_s"] > 0
    assert "jump_forward=on" in rows["e"]["label"]
    text = (out / "report.md").read_text()
    assert "| e | best stack, run " in text and "| s | seed stack at its defaults |" in text and "| m | " in text
    assert "TTFT p50 s" in text and "streamed" in text
