"""The Image tab: a round's images next to the reference's, drawn in half blocks (each cell is two pixels: the upper
one the foreground colour of '▀', the lower one its background)."""

from pathlib import Path

from PIL import Image
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from app import outputs
from app.tui.literal import lit

WIDTH = 32
BLOCK = "▀"


def half_blocks(path: Path, width: int = WIDTH) -> Text:
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    rows = max(1, round(image.height * width / image.width / 2))
    pixels = image.resize((width, 2 * rows), Image.Resampling.BOX).load()
    assert pixels is not None
    text = Text()
    for y in range(0, 2 * rows, 2):
        if y:
            text.append("\n")
        for x in range(width):
            (r, g, b), (r2, g2, b2) = pixels[x, y], pixels[x, y + 1]  # type: ignore[misc]
            text.append(BLOCK, style=f"rgb({r},{g},{b}) on rgb({r2},{g2},{b2})")
    return text


def render(run_dir: Path, n: int) -> RenderableType:
    """Each case's image of round n beside the reference's; a sentence when the round kept none."""
    pairs = outputs.images(run_dir, n)
    if not pairs:
        return lit(f"No images for round {n}: the checker kept none, or the round did not reach the checker.")
    grids = []
    for pair in pairs:
        grid = Table.grid(padding=(0, 2))
        grid.add_row(lit(f"{pair.name} · round {n}", style="bold"), lit(f"{pair.name} · reference", style="bold"))
        grid.add_row(*(half_blocks(p) if p else lit("(none)") for p in (pair.image, pair.reference)))
        grids.append(grid)
    return Group(*grids)


class ImagePane(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static("select a round", id="image-view")

    def show(self, body: RenderableType) -> None:
        self.query_one("#image-view", Static).update(body)
