"""Images a checker keeps per round: moved by the Judge, listed by `atelier show`, drawn in the TUI's Image tab."""

import asyncio
import json

import numpy as np
import pytest
from PIL import Image
from test_tui_snapshots import app_for, fixture_store, open_run, settle

from app import outputs, readonly
from app.cli import main
from app.judge import judge
from app.run import Options, create
from app.store import Store
from app.target import load
from app.tui import image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
MAIN = "toy-20260921-133320-a1b2"
WRITE_IMAGE = """
    from PIL import Image

    (Path(a.cache) / "outputs").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), (len(got), 0, 0)).save(Path(a.cache) / "outputs" / "p0.png")
    Image.new("RGB", (8, 8), (len(expected), 0, 0)).save(Path(a.cache) / "outputs" / "p0.reference.png")
    print("CHECK PASS" if not failures else "")
"""


def stripes(path, size: int = 64) -> None:
    """Rows alternating red and green every 2 pixels: each half-block cell is red above green."""
    pixels = np.zeros((size, size, 3), np.uint8)
    for y in range(size):
        pixels[y] = RED if (y // 2) % 2 == 0 else GREEN
    Image.fromarray(pixels).save(path)


def round_images(home, n: int = 1):
    folder = outputs.folder(home / "runs" / MAIN, n)
    folder.mkdir(parents=True)
    stripes(folder / "fox.png")
    Image.new("RGB", (64, 64), BLUE).save(folder / "fox.reference.png")
    return folder


def test_keep_moves_the_checkers_outputs_to_the_rounds_folder(tmp_path):
    written = tmp_path / "cache" / "outputs"
    assert outputs.keep(tmp_path, 3) is None
    for n, name in ((None, "a.png"), (3, "b.png"), (3, "c.png")):
        written.mkdir(parents=True)
        (written / name).write_bytes(b"png")
        assert outputs.keep(tmp_path, n) == outputs.folder(tmp_path, n or 0) and not written.exists()
    assert [p.name for p in outputs.folder(tmp_path, 0).iterdir()] == ["a.png"]
    assert [p.name for p in outputs.folder(tmp_path, 3).iterdir()] == ["c.png"]  # the last attempt's only
    assert [(p.name, p.image.name, p.reference) for p in outputs.images(tmp_path, 3)] == [("c", "c.png", None)]


@pytest.mark.slow
def test_judge_keeps_the_checker_images_per_round_and_the_cache_stays_untouched(toy, home):
    check = toy / "check.py"
    check.write_text(check.read_text().replace('    print("CHECK PASS" if not failures else "")\n', WRITE_IMAGE))
    run = create(load(str(toy)), Options(), Store())
    assert judge(run, None, run.workspace.path).passed
    run.update(manifest=json.dumps(readonly.manifest(run.dir)))  # as the baseline does: the cache is frozen
    assert [p.name for p in sorted(outputs.folder(run.dir, 0).iterdir())] == ["p0.png", "p0.reference.png"]
    assert not (run.dir / "cache" / "outputs").exists()
    verdict = judge(run, 1, run.workspace.path)
    assert verdict.passed, verdict.reasons
    [pair] = outputs.images(run.dir, 1)
    assert (pair.name, pair.image.name, pair.reference.name) == ("p0", "p0.png", "p0.reference.png")


def test_show_lists_the_best_rounds_images_and_any_rounds(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    fixture_store(home, monkeypatch)
    monkeypatch.setenv("ATELIER_HOME", str(home))
    folder = round_images(home)
    assert main(["show", MAIN]) == 0
    out = capsys.readouterr().out
    assert "images of round 1 (the best stack):" in out
    assert f"fox   {folder / 'fox.png'}  {folder / 'fox.reference.png'}" in out
    assert main(["show", MAIN, "--round", "2"]) == 0
    assert "images of round 2: none (the checker kept no images for it)" in capsys.readouterr().out
    assert main(["show", "toy-20260921-143320-c3d4"]) == 0
    assert "images of" not in capsys.readouterr().out


def test_half_blocks_carry_two_pixels_per_cell(tmp_path):
    stripes(tmp_path / "s.png", size=8)
    text = image.half_blocks(tmp_path / "s.png", width=4)
    assert text.plain == "\n".join(["▀" * 4] * 2)
    styles = {str(span.style) for span in text.spans}
    assert styles == {"rgb(255,0,0) on rgb(0,255,0)"}


def test_image_tab_draws_the_rounds_image_next_to_the_reference(tmp_path, monkeypatch):
    home = tmp_path / "home"
    db = fixture_store(home, monkeypatch)
    round_images(home)
    drawn = {}

    async def script(pilot):
        await open_run(pilot)
        pilot.app.screen.query_one("#tabs").active = "tab-image"
        await settle(pilot)
        view = pilot.app.screen.query_one("#image-view")
        strips = view.render_lines(view.region.reset_offset)
        drawn["lines"] = ["".join(s.text for s in strip) for strip in strips]
        drawn["cells"] = [
            [(seg.style.color.triplet, seg.style.bgcolor.triplet) for seg in strip if seg.text.strip("▀") == ""
             and seg.text and seg.style and seg.style.bgcolor]
            for strip in strips
        ]  # fmt: skip

    async def run():
        async with app_for(db).run_test(size=(130, 36)) as pilot:
            await script(pilot)

    asyncio.run(run())
    assert "fox · round 1" in drawn["lines"][0] and "fox · reference" in drawn["lines"][0]
    rows = [line for line in drawn["lines"] if "▀" in line]
    assert len(rows) == 16 and all(line.count("▀") == 2 * image.WIDTH for line in rows)
    colours = {cell for strip in drawn["cells"] for cell in strip}
    assert colours == {(RED, GREEN), (BLUE, BLUE)}
