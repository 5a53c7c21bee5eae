"""Updating a DataTable in place, so a poll that changes a few cells redraws only those cells. Cells are shown
literally: a str cell is never markup (app/tui/literal.py), a Text cell keeps its styles."""

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from app.tui.literal import line


def shown(cell: "str | Text") -> Text:
    return cell if isinstance(cell, Text) else line(cell)


def sync(table: DataTable, old: list[tuple], new: list[tuple], key: int = 0) -> bool:
    """Show `new` where `old` was shown: changed cells updated and rows appended while the keys still line up, else
    the table is rebuilt. True when it was rebuilt."""
    rebuilt = [r[key] for r in old] != [r[key] for r in new[: len(old)]]
    if rebuilt:
        table.clear()
        old = []
    for y, (before, after) in enumerate(zip(old, new, strict=False)):
        for x, (a, b) in enumerate(zip(before, after, strict=True)):
            if a != b:
                cell = shown(b)
                wider = cell.cell_len > table.ordered_columns[x].content_width
                table.update_cell_at(Coordinate(y, x), cell, update_width=wider)
    for row in new[len(old) :]:
        table.add_row(*map(shown, row), key=str(row[key]))
    return rebuilt
