"""Updating a DataTable in place, so a poll that changes a few cells redraws only those cells."""

from textual.coordinate import Coordinate
from textual.widgets import DataTable


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
                table.update_cell_at(Coordinate(y, x), b, update_width=True)
    for row in new[len(old) :]:
        table.add_row(*row, key=row[key])
    return rebuilt
