"""`atelier bench tui` on small settings: it builds its store, times real TUI processes and prints its table."""

import re

import pytest

from conftest import atelier


@pytest.mark.slow
def test_bench_tui_prints_its_figures(tmp_path):
    result = atelier("bench", "tui", "--runs", "20", "--repeats", "1", "--seconds", "2", home=tmp_path, timeout=300)
    out = result.stdout
    assert result.returncode in (0, 1), out + result.stderr
    assert re.search(r"^  atelier tui +\d+\.\d{3} ", out, re.M), out
    for row in ("an empty Textual app", "the live run's rounds tab", "the live run's events tab", "keys:"):
        assert re.search(rf"^  {re.escape(row)}.* +\d+\.\d +\d+\.\d +\d+\.\d +\d+\.\d +\d+$", out, re.M), out
    shown = re.findall(r"^(rounds|events|keys): rounds (\d+) → (\d+), (\d+) event lines", out, re.M)
    assert [mode for mode, *_ in shown] == ["rounds", "events", "keys"]
    assert all(int(after) > int(before) for _, before, after, _ in shown), out
    assert int(shown[1][3]) > 0, "the events tab showed the live run's events"
    assert out.strip().splitlines()[-1].startswith(("ok: ", "FAIL: startup", "FAIL: a frame stall"))
    assert (result.returncode == 0) == out.strip().splitlines()[-1].startswith("ok: ")
    assert not (tmp_path / "atelier.db").exists(), "the bench keeps its store in a temporary folder"
