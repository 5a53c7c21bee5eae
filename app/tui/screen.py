from typing import TYPE_CHECKING, cast

from textual.screen import Screen
from textual.widgets import Static

if TYPE_CHECKING:
    from app.tui.app import AtelierApp


class AtelierScreen(Screen):
    """A screen that knows its app is Atelier's (its store reader, poll interval and `act`)."""

    @property
    def atelier(self) -> "AtelierApp":
        return cast("AtelierApp", self.app)

    def put(self, selector: str, text: str) -> None:
        """Set a Static's text, only when it changed: an update lays the screen out again."""
        shown = self.__dict__.setdefault("_put", {})
        if shown.get(selector) != text:
            shown[selector] = text
            self.query_one(selector, Static).update(text)
