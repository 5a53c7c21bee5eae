from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static

from app.tui.literal import lit

if TYPE_CHECKING:
    from app.tui.app import AtelierApp


class AtelierScreen(Screen):
    """A screen that knows its app is Atelier's (its store reader, poll interval and `act`)."""

    @property
    def atelier(self) -> "AtelierApp":
        return cast("AtelierApp", self.app)

    def put(self, selector: str, text: "str | Text", layout: bool = True) -> None:
        """Set a Static's text, literally (a str is never markup), only when it changed. An update that could change
        the Static's height lays the screen out again; one with as many lines, none of them wrapping, does not."""
        shown = self.__dict__.setdefault("_put", {})
        text = lit(text)
        before = shown.get(selector)
        if before == text:
            return
        shown[selector] = text
        static = self.query_one(selector, Static)
        if layout and before is not None and static.size.width:
            layout = not (_fits(before, static.size.width) and _fits(text, static.size.width)) or (
                before.plain.count("\n") != text.plain.count("\n")
            )
        static.update(text, layout=layout)


def _fits(text: Text, width: int) -> bool:
    return all(len(line) < width for line in text.plain.split("\n"))
