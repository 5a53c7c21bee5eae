import json
import shutil
from pathlib import Path

import pytest

from app.cli import main
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


@pytest.mark.slow
def test_bench_runs_reference_seed_and_tuned_side_by_side_and_writes_the_report(home, tmp_path):
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
