import json
import shutil
from pathlib import Path

import pytest

from app.bench import showo2bench
from app.cli import main
from backends import sandbox
from conftest import atelier

TARGET = Path(__file__).resolve().parents[1] / "targets" / "showo2-tiny"


def tuned_copy(dest: Path, **values) -> Path:
    shutil.copytree(TARGET / "seed", dest, ignore=shutil.ignore_patterns("__pycache__"))
    knobs = dest / "atelier.knobs.toml"
    text = knobs.read_text()
    for name, value in values.items():
        head, _, tail = text.partition(f"[{name}]\n")
        line = next(line for line in tail.splitlines() if line.startswith("default = "))
        text = head + f"[{name}]\n" + tail.replace(line, f"default = {json.dumps(value)}", 1)
    knobs.write_text(text)
    return dest


def test_bad_rows_and_missing_stacks_are_one_line_errors(home, tmp_path, capsys):
    assert main(["bench", "showo2", "--rows", "a,x"]) == 1
    assert "unknown bench rows ['x']: choose from a, b, c" in capsys.readouterr().err
    assert main(["bench", "showo2", "--stack", str(tmp_path)]) == 1
    assert f"--stack {tmp_path}: no serve.py there" in capsys.readouterr().err
    assert main(["bench", "showo2"]) == 1
    assert "row c: no showo2-tiny run with a best stack" in capsys.readouterr().err


def test_without_bubblewrap_the_bench_stops_with_the_fix(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "available", lambda: "bubblewrap is not installed: apt-get install bubblewrap")
    assert main(["bench", "showo2", "--stack", str(tuned_copy(tmp_path / "tuned")), "--out", str(tmp_path)]) == 1
    assert "atelier: error: bubblewrap is not installed: apt-get install bubblewrap" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


FAKE = """
import json, os, sys
from pathlib import Path
from PIL import Image

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    seen = [k for k in os.environ if k.endswith("_KEY")] + [p for p in PATHS if os.access(p, os.R_OK)]
    seen += ["the original folder"] if Path(__file__).resolve().parent == Path(ORIGINAL) else []
    if seen:
        print(json.dumps({"id": request["id"], "error": f"saw {seen}"}), flush=True)
        continue
    Image.new("RGB", (64, 64), (9, 99, 199)).save(request["out"])
    print(json.dumps({"id": request["id"], "out": request["out"], "timings": {}}), flush=True)
"""


def test_the_tuned_stack_runs_confined_from_a_fresh_copy_without_credentials(bwrap, home, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-stacks")
    monkeypatch.setattr(showo2bench, "measure_machine", lambda floor: MACHINE)
    home.mkdir()
    (home / "secret").write_text("the store's neighbours")
    stack, out = tmp_path / "stack", tmp_path / "bench"
    stack.mkdir()
    paths = [str(home / "secret"), str(TARGET / "suite" / "cases.json"), str(out)]
    (stack / "serve.py").write_text(f"PATHS = {paths!r}\nORIGINAL = {str(stack)!r}\n" + FAKE)
    assert main(["bench", "showo2", "--stack", str(stack), "--rows", "c", "--repeats", "1", "--out", str(out)]) == 0
    [row] = json.loads((out / "results.json").read_text())["rows"]
    assert row["error"] == "" and row["latencies"] and (out / "images" / "c.png").is_file(), row
    assert not list((home / "bench").iterdir()) and not (stack / "out").exists()


MACHINE = {"mlx_bundled": {"matmul_gflops": 10.0}, "mlx_openblas": {"matmul_gflops": 10.0},
           "torch": {"matmul_gflops": 10.0}, "best_gflops": 10.0, "bandwidth_gbs": 10.0}  # fmt: skip


@pytest.mark.slow
def test_bench_runs_reference_seed_and_tuned_side_by_side_and_writes_the_report(bwrap, home, tmp_path):
    tuned = tuned_copy(tmp_path / "tuned", body_cache="on", head_cache="on", prefill_trim="on", siglip="per_step")
    out = tmp_path / "bench"
    done = atelier("bench", "showo2", "--stack", str(tuned), "--steps", "2", "--repeats", "1", "--out", str(out),
                   home=home, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = {r["key"]: r for r in results["rows"]}
    assert list(rows) == ["a", "b", "c"] and results["steps"] == 2
    for key, row in rows.items():
        assert (out / "images" / f"{key}.png").is_file() and row["median_s"] > 0 and row["floor_ratio"] > 1
        assert row["checker"] == "pass", row  # exact knobs only: every row's image matches the reference's
    assert rows["a"]["mae"] == 0 and rows["a"]["speedup"] == 1
    assert rows["c"]["body_s"] > 0 and rows["c"]["settings"]["body_cache"] == "on"
    assert rows["c"]["gflop"] == rows["b"]["gflop"]  # the floor's ideal algorithm at the same lossy knobs
    machine = results["machine"]
    assert all(machine[k]["matmul_gflops"] > 0 for k in ("mlx_bundled", "mlx_openblas", "torch"))
    report = (out / "report.md").read_text()
    assert "| c | tuned stack (stack " in report and "GFLOP/s" in report and "row ÷ floor" in report
